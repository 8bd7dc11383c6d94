import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

import insarslide.config  # noqa: F401
from insarslide.contract.spec import BANDS, check_band_names
from conftest import CONF, THESIS_MILLIONS as MODELS, compose_train


def test_default_config_is_the_thesis_recipe(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train")  # not compose_train: that one picks model=tiny for the CPU tests
    assert cfg.model.name == "segformer_b2" and cfg.model.net.encoder_name == "mit_b2"
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 5e-5
    assert cfg.scheduler._target_.endswith("CosineAnnealingLR") and cfg.scheduler.T_max == 100
    assert cfg.trainer.max_epochs == 100
    assert list(cfg.data.bands) == list(BANDS)
    assert cfg.smoothing.sigma == 0 and cfg.split.fractions == [0.7, 0.2, 0.1]
    assert cfg.sampler.weights == [0.1, 0.5, 0.3, 0.1]
    assert cfg.model.net.encoder_weights is None


@pytest.mark.parametrize("name,millions", MODELS.items())
def test_model_parameter_counts_match_the_thesis(tmp_path, name, millions):
    import hydra

    cfg = compose_train([f"model={name}"], tmp_path)
    assert cfg.model.net.in_channels == 7
    net = hydra.utils.instantiate(cfg.model.net)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions


def test_in_channels_follow_the_band_list(tmp_path):
    cfg = compose_train(["data.bands=[coherence,displacement]"], tmp_path)
    assert cfg.model.net.in_channels == 2


def test_unknown_model_names_it_and_lists_choices(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_train(["model=resnet_9000"], tmp_path)
    message = str(err.value)
    assert "resnet_9000" in message
    for name in MODELS:
        assert name in message


def test_band_outside_the_spec_names_it_and_lists_choices():
    with pytest.raises(ValueError) as err:
        check_band_names(["coherence", "ndvi"])
    assert "ndvi" in str(err.value) and "local_incidence_angle" in str(err.value)


def test_datamodule_refuses_unknown_band(tmp_path):
    import hydra

    cfg = compose_train(["data.bands=[coherence,velocity]"], tmp_path)
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="velocity") as err:
        hydra.utils.instantiate(cfg.data)
    assert "coherence" in str(err.value)  # the valid choices are listed


@pytest.mark.parametrize("override,node,expected", [
    ("split=stratified", "split", "StratifiedSplit"), ("split=region", "split", "RegionSplit"),
    ("split=random", "split", "RandomSplit"), ("sampler=uniform", "sampler", "UniformSampler"),
    ("sampler=bucket", "sampler", "BucketSampler"), ("oversample=thesis", "oversample", "SmallLandslideOversampler"),
    ("augment=albumentations", "augment", "AlbumentationsAugmenter"), ("augment=thesis", "augment", "Augmenter"),
    ("trainer=ddp_cpu", "trainer", "Trainer"), ("logger=csv", "logger.csv", "CSVLogger"),
])
def test_group_options_instantiate(tmp_path, override, node, expected):
    import hydra
    from omegaconf import OmegaConf

    cfg = compose_train([override], tmp_path)
    obj = hydra.utils.instantiate(OmegaConf.select(cfg, node))
    assert type(obj).__name__ == expected


def test_switch_off_options(tmp_path):
    assert compose_train(["augment=none"], tmp_path).augment is None
    assert compose_train(["logger=none"], tmp_path).logger is None
    assert compose_train(["scheduler=none"], tmp_path).scheduler is None
    assert compose_train(["oversample=none"], tmp_path).oversample is None
    assert compose_train(["eval=none"], tmp_path).callbacks.evaluation is None
    gpu = compose_train(["trainer=ddp"], tmp_path).trainer
    assert gpu.strategy == "ddp" and gpu.sync_batchnorm is True  # (the test helper forces accelerator=cpu)
    wandb = compose_train(["logger=wandb"], tmp_path).logger.wandb
    assert wandb._target_.endswith("WandbLogger") and wandb.project == "insarslide"
    quick = compose_train(["experiment=quickstart"], tmp_path)
    assert quick.data.builder.settings.n_scenes == 240 and list(quick.data.builder.settings.size) == [384, 384]
    assert quick.data.builder.settings.processing.looks_az == 4
    assert quick.data.builder.settings.regimes.weights.vegetated == 0.2  # every regime mixed (simulate=regimes)
    assert quick.model.name == "unet_r18" and quick.split._target_.endswith("RegionSplit")
    assert list(quick.split.fractions) == [0.5, 0.2, 0.3] and quick.sampler.epoch_length == 320
    assert quick.module.loss.dice == 1.0 and quick.augment.coherence_bias == 0.1
    assert quick.augment.band_offset.displacement == 0.05 and quick.augment.band_offset.coherence == 0.0


def test_simulate_and_patches_configs_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sim = compose(config_name="simulate", overrides=["n_scenes=2", "size=[300,257]"])
        patches = compose(config_name="patches", overrides=["scenes_dir=a", "out_dir=b"])
    assert sim.size == [300, 257] and patches.patch_size == 256
    # The patch size the data set is cut at is the one training reads (thesis 256 px), and the networks take it:
    # SMP encoders downsample 5 times, so a side must be a multiple of 2**5 = 32 (256 = 8 * 32).
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        train = compose(config_name="train")
    assert train.data.patch_size == patches.patch_size and patches.patch_size % 32 == 0
    assert patches.stride is None  # null: stride = patch size, the thesis's non-overlapping tiles


@pytest.mark.parametrize("split", ["random", "stratified", "region"])
def test_training_seed_leaves_the_split_alone(tmp_path, split):
    """seed=1,2,3 trains on the same split (a paired comparison over seeds needs it); data_seed moves it."""
    cfg = compose_train([f"split={split}", "seed=1"], tmp_path)
    assert cfg.seed == 1 and cfg.data.seed == 1 and cfg.split.seed == 42
    assert cfg.split._target_.lower().endswith(split + "split")
    assert compose_train([f"split={split}", "seed=1", "data_seed=7"], tmp_path).split.seed == 7


def test_training_seed_leaves_the_quickstart_scenes_alone(tmp_path):
    cfg = compose_train(["experiment=quickstart", "seed=1"], tmp_path)
    assert cfg.data.builder.settings.seed == 42 and cfg.split.seed == 42
    assert compose_train(["experiment=quickstart", "data_seed=7"], tmp_path).data.builder.settings.seed == 7


def test_tiny_model_is_small_and_keeps_the_patch_grid(tmp_path):
    """model=tiny: 3x3 convolutions without bias plus BatchNorm, counted by hand (7 bands, width 16)."""
    import hydra
    import torch

    net = hydra.utils.instantiate(compose_train(["model=tiny"], tmp_path).model.net)
    by_hand = (7 * 16 * 9 + 32) + (16 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + (64 * 16 * 9 + 32) + (32 * 16 * 9 + 32) + 17
    assert sum(p.numel() for p in net.parameters()) == by_hand == 28897
    assert net(torch.zeros(2, 7, 64, 96)).shape == (2, 1, 64, 96)
    # model.net.norm=false (the DDP test's network): convolutions with bias, no BatchNorm, no running statistics.
    plain = hydra.utils.instantiate(compose_train(["model=tiny", "model.net.norm=false"], tmp_path).model.net)
    by_hand = (7 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (64 * 16 * 9 + 16) + (32 * 16 * 9 + 16) + 17
    assert sum(p.numel() for p in plain.parameters()) == by_hand == 28785 and not list(plain.buffers())
