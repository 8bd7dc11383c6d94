"""Training batches of one sample: BatchNorm models break on them, so the training loader drops them (data.drop_last)."""

from __future__ import annotations

import pytest

from conftest import compose_train
from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set
from insarslide.data.datamodule import PatchDataModule
from insarslide.contract.spec import BANDS
from insarslide.data.splits import RegionSplit
from insarslide.training.run import train

FIVE_TRAINING = {"train_a": 5, "val_b": 3, "test_c": 3}


def training_loader(root, batch_size: int, drop_last: bool):
    datamodule = PatchDataModule(str(root), list(BANDS), batch_size=batch_size, patch_size=PATCH, drop_last=drop_last,
                                 split=RegionSplit(val_events=["val_b"], test_events=["test_c"]))
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def test_incomplete_training_batch_is_dropped_only_when_a_full_one_exists(tmp_path):
    root = write_odd_patch_set(tmp_path / "data", FIVE_TRAINING)
    # 5 samples in batches of 2: 2 full batches, the single left-over sample waits for the next epoch.
    assert [len(b["index"]) for b in training_loader(root, 2, drop_last=True)] == [2, 2]
    assert [len(b["index"]) for b in training_loader(root, 2, drop_last=False)] == [2, 2, 1]
    # Fewer samples than a batch: the one incomplete batch is the epoch, so it stays.
    assert [len(b["index"]) for b in training_loader(root, 8, drop_last=True)] == [5]


# The thesis's UPerNet normalises its pyramid pooling's 1 x 1 maps with BatchNorm: one value per channel when a
# batch holds one sample. The same layer in a network of a few parameters, so the default run keeps the guard.
POOLED_BATCHNORM = ("+model.net={_target_:torch.nn.Sequential,_args_:["
                    "{_target_:torch.nn.Conv2d,in_channels:7,out_channels:4,kernel_size:1},"
                    "{_target_:torch.nn.AdaptiveAvgPool2d,output_size:1},{_target_:torch.nn.BatchNorm2d,num_features:4},"
                    "{_target_:torch.nn.Conv2d,in_channels:4,out_channels:1,kernel_size:1},"
                    f"{{_target_:torch.nn.Upsample,size:{PATCH}}}]}}")


@pytest.mark.parametrize("model", [
    pytest.param(["model.name=pooled_batchnorm", "~model.net", POOLED_BATCHNORM], id="pooled_batchnorm"),
    pytest.param(["model=upernet_convnext"], id="upernet_convnext", marks=pytest.mark.slow)])
def test_remainder_one_batch_trains_a_model_with_pooled_batchnorm(tmp_path, model):
    root = write_odd_patch_set(tmp_path / "data", FIVE_TRAINING)
    run = [*SPLIT_OVERRIDES, *model, f"data.patch_size={PATCH}", "data.batch_size=2",
           "oversample=none", "sampler=uniform", "trainer.max_epochs=1", "eval=none", "logger=none"]
    # The crash this guards against: the third batch holds one sample, and BatchNorm cannot train on it.
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        train(compose_train([*run, "data.drop_last=false"], tmp_path / "kept", root))
    metrics = train(compose_train(run, tmp_path / "dropped", root))  # data.drop_last defaults to true
    assert metrics["data_counts"]["train_samples"] == 5
    assert metrics["model"] == ("upernet_convnext" if "model=upernet_convnext" in model else "pooled_batchnorm")
