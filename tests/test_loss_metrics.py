import numpy as np
import pytest
import torch

from insarslide.models.loss import SegmentationLoss, masked_bce_with_logits, masked_dice_with_logits
from insarslide.metrics.pixel import BinaryScores, ThresholdSweep, confusion_counts, scores_from_counts


def test_loss_ignores_invalid_pixels():
    logits = torch.tensor([[0.0, 5.0, -3.0, 100.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :3], target[:, :3])
    assert torch.isclose(masked_bce_with_logits(logits, target, valid), expected)
    # Changing an invalid pixel's logit or label changes nothing.
    logits2, target2 = logits.clone(), target.clone()
    logits2[0, 3], target2[0, 3] = -50.0, 1.0
    assert torch.isclose(masked_bce_with_logits(logits2, target2, valid), expected)


def test_loss_accepts_soft_targets():
    logits = torch.zeros(1, 4)
    soft = torch.tensor([[0.25, 0.5, 0.75, 1.0]])
    loss = masked_bce_with_logits(logits, soft, torch.ones(1, 4))
    assert torch.isclose(loss, torch.tensor(np.log(2.0), dtype=torch.float32))


def test_loss_without_valid_pixels_is_zero_with_finite_gradients():
    logits = torch.randn(2, 8, 8, requires_grad=True)
    loss = masked_bce_with_logits(logits * 1e4, torch.ones(2, 8, 8), torch.zeros(2, 8, 8))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_loss_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="same shape"):
        masked_bce_with_logits(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.ones(1, 2, 2))


def brute_force(prob, truth, valid, thresholds):
    out = []
    for t in thresholds:
        pred = (prob >= t) & valid
        tp = (pred & truth & valid).sum()
        fp = (pred & ~truth & valid).sum()
        fn = (~pred & truth & valid).sum()
        out.append((tp, fp, fn))
    return np.array(out)


def _dice_case():
    # 4 valid pixels predicted [1, 1, 0, 0] (logits +-30) against [1, 0, 0, 0]; a fifth pixel, predicted 1 and
    # labelled 1, has no data. By hand: TP 1, predicted 2, true 1: Dice 2/3, loss 1/3 (counting the no-data
    # pixel would give TP 2, predicted 3, true 2: Dice 4/5, loss 0.2).
    logits = torch.tensor([[[30.0, 30.0, -30.0, -30.0, 30.0]]])
    target = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 1.0]]])
    valid = torch.tensor([[[1, 1, 1, 1, 0]]], dtype=torch.uint8)
    return logits, target, valid


def test_dice_loss_counts_valid_pixels_only():
    logits, target, valid = _dice_case()
    assert masked_dice_with_logits(logits, target, valid).item() == pytest.approx(1 / 3, abs=1e-6)


def test_combined_loss_weighs_its_terms_and_refuses_bad_weights():
    logits, target, valid = _dice_case()
    bce = masked_bce_with_logits(logits, target, valid).item()  # one pixel of 4 wrong by 30 nats: about 7.5
    assert bce == pytest.approx(30 / 4, rel=1e-3)
    assert SegmentationLoss(bce=1.0, dice=0.0)(logits, target, valid).item() == pytest.approx(bce)
    assert SegmentationLoss(bce=0.5, dice=2.0)(logits, target, valid).item() == pytest.approx(0.5 * bce + 2 / 3, rel=1e-5)
    with pytest.raises(ValueError, match="unknown term"):
        SegmentationLoss.from_config({"focal": 1.0})
    with pytest.raises(ValueError, match="not both 0"):
        SegmentationLoss(bce=0.0, dice=0.0)


@pytest.mark.parametrize("num_thresholds", [129, 101, 2, 257])
def test_threshold_sweep_matches_brute_force(num_thresholds):
    rng = np.random.default_rng(0)
    sweep = ThresholdSweep(num_thresholds)
    probs, truths, valids = [], [], []
    for _ in range(3):  # several batches, one pass each
        prob = rng.random((2, 32, 32)).astype(np.float32)
        grid = sweep.thresholds.numpy()
        prob[0, 0, : min(32, grid.size)] = grid[:32]  # exactly on grid values
        prob[0, 1, : min(32, grid.size)] = np.maximum(np.nextafter(grid[:32], -1), 0)  # just below them
        truth = rng.random((2, 32, 32)) < 0.2
        valid = rng.random((2, 32, 32)) < 0.9
        sweep.update(torch.from_numpy(prob), torch.from_numpy(truth), torch.from_numpy(valid))
        probs.append(prob), truths.append(truth), valids.append(valid)
    prob, truth, valid = (np.concatenate(a) for a in (probs, truths, valids))
    grid = sweep.thresholds.numpy()
    expected = brute_force(prob, truth, valid, grid)
    tp, fp, fn = (t.numpy() for t in sweep.counts())
    np.testing.assert_array_equal(np.stack([tp, fp, fn], 1), expected)
    iou = expected[:, 0] / np.maximum(expected.sum(1), 1)
    threshold, scores = sweep.best("iou")
    assert threshold == pytest.approx(grid[int(np.argmax(iou))])
    assert scores.iou == pytest.approx(iou.max())


def test_threshold_sweep_has_at_least_101_thresholds_by_default():
    assert ThresholdSweep().thresholds.numel() >= 101


def test_scores_and_binary_scores():
    # Asymmetric counts, so that swapping precision and recall (or FP and FN) shows:
    # TP 2, FP 1, FN 3 -> precision 2/3, recall 2/5, F1 4/8, IoU 2/6.
    s = scores_from_counts(torch.tensor(2), torch.tensor(1), torch.tensor(3))
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 5)
    assert s["f1"] == pytest.approx(0.5) and s["iou"] == pytest.approx(1 / 3)
    empty = scores_from_counts(torch.tensor(0), torch.tensor(0), torch.tensor(0))
    assert all(v == 0 for v in empty.values())
    metric = BinaryScores(0.5)
    # 0.9 landslide: TP; 0.6 background: FP; 0.2 and 0.1 landslide: FN; 0.7 landslide but invalid: ignored.
    prob = torch.tensor([0.9, 0.6, 0.2, 0.7, 0.1])
    truth = torch.tensor([1, 0, 1, 1, 1])
    valid = torch.tensor([1, 1, 1, 0, 1])
    metric.update(prob, truth, valid)
    result = metric.compute()
    assert (result.tp, result.fp, result.fn) == (1, 1, 2)
    assert result.precision == pytest.approx(1 / 2) and result.recall == pytest.approx(1 / 3)
    assert tuple(int(x) for x in confusion_counts(prob, truth, valid, 0.5)) == (1, 1, 2)
