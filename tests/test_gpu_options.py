"""GPU speed options (off by default, usable on the CPU) and the throughput benchmark's CPU smoke run."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import REPO, compose_train
from insarslide.models.module import LandslideSegmenter

UNET = {"_target_": "segmentation_models_pytorch.Unet", "encoder_name": "resnet18", "encoder_weights": None,
        "in_channels": 7, "classes": 1}
BANDS = ["phase", "coherence", "intensity", "elevation", "displacement", "unwrapped_phase", "local_incidence_angle"]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_throughput", REPO / "bench" / "bench_gpu_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_throughput_benchmark_smoke_on_cpu(capsys):
    results = load_bench().main(["--device", "cpu", "--batch", "2", "--size", "32", "--steps", "1", "--warmup", "1",
                                 "--rounds", "1", "--models", "unet_r34"])
    (result,) = results
    for phase in ("train", "inference"):
        figures = result[phase]
        assert figures["plain"] > 0 and figures["lightning"] > 0
        assert figures["ratio"] == pytest.approx(figures["lightning"] / figures["plain"])
    out = capsys.readouterr().out
    assert "device cpu" in out and "unet_r34" in out and "lowest ratio Lightning / plain" in out


def segmenter(**options) -> LandslideSegmenter:
    torch.manual_seed(0)
    return LandslideSegmenter(UNET, BANDS, **options)


def test_defaults_keep_the_plain_float32_network(tmp_path):
    cfg = compose_train(["model=segformer_b2"], tmp_path)
    assert (cfg.module.channels_last, cfg.module.compile, cfg.module.compile_mode) == (False, False, "default")
    assert (cfg.data.pin_memory, cfg.data.persistent_workers, cfg.data.drop_last) == (False, True, True)
    assert cfg.trainer.precision == "32-true"
    module = segmenter()
    assert module.net._compiled_call_impl is None
    assert not module.net.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_feeds_the_network_nhwc_with_the_same_result():
    plain, nhwc = segmenter(), segmenter(channels_last=True)
    assert nhwc.net.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    nhwc.net.register_forward_pre_hook(lambda net, inputs: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    bands = torch.randn(2, 7, 64, 64)
    plain.eval(), nhwc.eval()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(bands), plain(bands), rtol=1e-4, atol=1e-4)
    assert seen == [True]
    assert list(nhwc.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    plain.load_state_dict(nhwc.state_dict())


def test_compile_is_in_place_and_mode_is_checked():
    compiled = segmenter(compile=True, compile_mode="max-autotune")
    assert compiled.net._compiled_call_impl is not None  # compiles at its first batch
    assert list(compiled.state_dict()) == list(segmenter().state_dict())  # no "_orig_mod." in checkpoint names
    assert "compile" not in compiled.hparams and "channels_last" not in compiled.hparams
    with pytest.raises(ValueError, match="module.compile_mode 'fastest'"):
        segmenter(compile=True, compile_mode="fastest")


def test_logits_stay_float32_under_mixed_precision():
    module = segmenter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(torch.randn(2, 7, 32, 32))
    assert logits.dtype == torch.float32


def test_loader_options_reach_the_dataloaders(tmp_path):
    from hydra.utils import instantiate

    from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set

    root = write_odd_patch_set(tmp_path / "data")
    cfg = compose_train([*SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "oversample=none", "data.num_workers=1",
                         "data.pin_memory=true", "data.persistent_workers=false"], tmp_path / "run", root)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        assert loader.pin_memory and not loader.persistent_workers and loader.num_workers == 1


def test_bf16_mixed_precision_run_on_the_cpu(tmp_path):
    from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set
    from insarslide.training.run import train

    root = write_odd_patch_set(tmp_path / "data")
    metrics = train(compose_train([*SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "data.batch_size=2",
                                   "oversample=none", "trainer.precision=bf16-mixed",
                                   "module.channels_last=true", "++trainer.fast_dev_run=true", "eval.baselines=false",
                                   "eval.figures=false", "logger=none"], tmp_path / "run", root))
    assert 0.0 <= metrics["iou"] <= 1.0 and metrics["data_counts"]["test_patches"] == 5
    # the scores come from float32 counts under bf16 too: IoU = TP / (TP + FP + FN) = F1 / (2 - F1) exactly
    assert metrics["iou"] == pytest.approx(metrics["f1"] / (2 - metrics["f1"]), rel=1e-6)  # float32 scores
    assert metrics["model"] == "tiny" and metrics["parameters"] == 28897  # 7 bands, width 16 (test_spec_and_configs)


@pytest.mark.slow
def test_compiled_network_trains_on_the_cpu(tmp_path):
    """torch.compile (inductor, C++ on the CPU) of U-Net-R34 through a real run: about 2-4 minutes of compiling."""
    from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set
    from insarslide.training.run import train

    root = write_odd_patch_set(tmp_path / "data")
    metrics = train(compose_train([*SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "data.batch_size=2",
                                   "oversample=none", "model=unet_r34", "module.compile=true",
                                   "++trainer.fast_dev_run=true", "eval.baselines=false", "eval.figures=false",
                                   "logger=none"], tmp_path / "run", root))
    assert 0.0 <= metrics["iou"] <= 1.0
