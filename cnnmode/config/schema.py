"""The config schema: typed dataclasses, the only place defaults live.

A field's help text (and, for names, its valid choices) becomes the `--help` text of its dotted key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A config key or verb option with its `--help` text and, for names, the valid choices (and, for a verb's
    flag, the placeholder `--help` shows for its value)."""
    meta = {"help": help, "choices": choices, "metavar": metavar}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    path: str = opt("cifar10", "cifar10, cifar100, mnist, fashion-mnist, a class-folder tree, a .tar/.tar.gz/.zip "
                    "of one, or a .csv list of path,label[,split] rows")
    root: str = opt("./data", "where named datasets live or download to; caches go under <root>/cache")
    img_size: int = opt(0, "side length images are resized to (0 = the data's own size for small images, 224 otherwise)")
    val_split: float = opt(0.1, "fraction of train held out for validation (stratified, seeded)")
    test_split: float = opt(0.2, "fraction held out as test when the data has no test/ or val/ folder")
    calib_split: float = opt(0.02, "fraction of train held out to fit the probability temperature on when there "
                                   "is no validation split (0 = fit it on training images)")
    folds: int = opt(0, "K-fold cross-validation: cut train into this many stratified folds and validate on "
                     "data.fold (replaces data.val_split; 0 = off)")
    fold: int = opt(0, "with data.folds: the fold (0-based) held out for validation")
    subset: float = opt(0.0, "use only this many (>= 1) or this fraction (< 1) of each split, stratified; 0 = all")
    channels: int = opt(0, "image channels fed to the model: 1, 3, or 0 = 1 for all-grayscale data, else 3")
    workers: int = opt(-1, "DataLoader worker processes for large images streamed from disk (-1 = one per core "
                       "this process may use, at most 8; 0 = load in the training process)")
    max_file_mb: float = opt(100.0, "skip (and count) any image file or archive member larger than this many MB")
    max_total_gb: float = opt(20.0, "refuse an archive whose images unpack to more than this many GB")
    task: str = opt("auto", "single (one class per image), multilabel (a set of labels per image, from a .csv "
                     "list whose label cells separate names by ;), or auto (multilabel when the list has such cells)",
                     ("auto", "single", "multilabel"))
    sampler: str = opt("random", "training order: random (shuffle), or balanced (each class drawn equally often, "
                       "with replacement)", ("random", "balanced"))


@dataclass
class ModelConfig:
    name: str = opt("resnet18", "registry name (see `cnnmode models`)")
    stem: str = opt("auto", "ResNet stem: cifar (3x3 conv, no max-pool), imagenet, or auto (cifar below 64 px)",
                    ("auto", "cifar", "imagenet"))
    pretrained: str = opt("", "weights file or artifact to start from (head replaced if class counts differ)")
    freeze: str = opt("none", "none; backbone to train the classifier head only; or until:LAYER to train only the "
                      "layers after LAYER (a module name from `cnnmode summary`, e.g. until:layer3)")
    width: int = opt(0, "base channel width for models that take one (0 = the model's default)")


@dataclass
class OptimConfig:
    name: str = opt("sgd", "optimizer; muon = Muon (orthogonalised momentum) for conv filters, SGD for the rest",
                    ("sgd", "adam", "adamw", "radam", "muon"))
    lr: float = opt(0.1, "peak learning rate")
    weight_decay: float = opt(5e-4, "weight decay (decoupled for adamw)")
    momentum: float = opt(0.9, "SGD momentum")
    nesterov: bool = opt(True, "SGD Nesterov momentum")
    bias_lr_scale: float = opt(1.0, "learning-rate factor for biases and normalisation parameters")
    muon_lr: float = opt(0.05, "muon: peak learning rate of the conv filters (relative to their norm)")
    muon_momentum: float = opt(0.6, "muon: Nesterov momentum of the conv filters")


@dataclass
class SchedConfig:
    name: str = opt("onecycle", "learning-rate schedule", ("onecycle", "cosine", "step", "plateau", "constant"))
    warmup_epochs: float = opt(0.0, "linear warm-up length for cosine (onecycle uses pct_start)")
    pct_start: float = opt(0.25, "onecycle: fraction of steps spent rising to the peak")
    step_size: int = opt(5, "step: epochs between decays")
    gamma: float = opt(0.1, "step/plateau: decay factor")
    plateau_patience: int = opt(3, "plateau: epochs without validation gain before decaying")


@dataclass
class AugConfig:
    flip: bool = opt(True, "random horizontal flip")
    alternate_flip: bool = opt(False, "with flip: mirror each image on alternate epochs (a random half in the "
                               "first) instead of by a fresh coin each epoch; small in-memory images only")
    crop_padding: int = opt(4, "pad-and-random-crop padding in pixels (0 = off)")
    autoaugment: bool = opt(False, "AutoAugment with the CIFAR10 policy")
    randaugment: bool = opt(False, "RandAugment")
    trivialaugment: bool = opt(False, "TrivialAugmentWide")
    cutout: int = opt(0, "Cutout square side in pixels (0 = off)")
    random_erasing: float = opt(0.0, "RandomErasing probability (0 = off)")
    mixup: float = opt(0.0, "MixUp alpha (0 = off)")
    cutmix: float = opt(0.0, "CutMix alpha (0 = off)")
    color_jitter: float = opt(0.0, "brightness, contrast and saturation each scaled by a random factor in "
                              "[1 - s, 1 + s] per image (0 = off; whole-batch for in-memory images)")
    grayscale: float = opt(0.0, "probability of turning an image grey (0 = off; whole-batch for in-memory images)")
    rotation: float = opt(0.0, "random rotation within +/- this many degrees (0 = off)")
    affine: float = opt(0.0, "random affine: shift up to this fraction of the size, scale by 1 +/- it (0 = off)")
    blur: float = opt(0.0, "probability of a 3x3 Gaussian blur with sigma in [0.1, 2] (0 = off)")
    batched: bool = opt(True, "run the per-image policies (autoaugment, randaugment, trivialaugment, rotation, "
                        "affine, blur, random_erasing) on whole batches on the training device: each image still "
                        "draws its own op and magnitude; false = torchvision's one-image-at-a-time reference path")


@dataclass
class TrainConfig:
    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(128, "images per optimizer step (before accumulation); under torchrun the global batch, "
                          "split evenly among the ranks")
    eval_batch_size: int = opt(512, "images per evaluation batch")
    accum_steps: int = opt(1, "gradient accumulation steps per optimizer step")
    grad_clip: float = opt(0.0, "clip gradient norm to this value (0 = off)")
    label_smoothing: float = opt(0.0, "label smoothing for cross-entropy")
    loss: str = opt("auto", "training loss: auto (ce for single-label data, bce for multi-label), ce "
                    "(cross-entropy) or focal (down-weights easy examples by (1 - p)^train.focal_gamma); for "
                    "multi-label data bce (binary cross-entropy per label) or asl (asymmetric loss: focal on the "
                    "absent labels)", ("auto", "ce", "focal", "bce", "asl"))
    focal_gamma: float = opt(2.0, "with train.loss=focal: the focusing exponent (0 = cross-entropy)")
    asl_gamma_neg: float = opt(4.0, "with train.loss=asl: the focusing exponent of absent labels (present "
                               "labels use 0)")
    asl_clip: float = opt(0.05, "with train.loss=asl: probability shift that ignores very easy absent labels")
    class_weights: str = opt("none", "per-class loss weights: none, auto (inverse class frequency), effective "
                             "(effective number of samples, beta 0.999), or a .json/.yaml file of {class: weight}")
    reweight_from: float = opt(0.0, "with train.class_weights: apply them only after this fraction of the epochs "
                               "(deferred re-weighting, as in LDAM-DRW; 0 = from the start)")
    amp: str = opt("auto", "mixed precision: auto (bf16 on capable CPUs, fp16 on CUDA), off, bf16, fp16",
                   ("auto", "off", "bf16", "fp16"))
    channels_last: bool = opt(True, "channels-last memory format")
    compile: bool = opt(False, "torch.compile the model")
    progressive_size: int = opt(0, "progressive resizing: train the first epoch at this image size, growing to "
                                "data.img_size over train.progressive_fraction of the epochs (0 = off)")
    progressive_fraction: float = opt(0.5, "fraction of the epochs over which progressive resizing grows the size")
    freeze_stem_after: int = opt(0, "stop training the first conv layer after this many epochs, which also skips "
                                 "its backward (FastNet: the whitening stem's bias; its filters never train) "
                                 "(0 = never)")
    ema: float = opt(0.0, "exponential moving average of weights, decay per step (0 = off); evaluation uses it")
    tta: bool = opt(False, "flip test-time augmentation at evaluation")
    tta_translate: int = opt(0, "with tta: also average over images shifted by +/- this many pixels at the final "
                             "evaluation (per-epoch validation uses flips only, to stay cheap)")
    early_stop_patience: int = opt(0, "stop after this many epochs without validation gain (0 = off)")
    early_stop_min_delta: float = opt(0.0, "minimum validation-accuracy gain that counts as progress")
    target_accuracy: float = opt(0.0, "report time_to_target_s: training time until validation accuracy first "
                                     "reaches this (without a validation split: the final test accuracy) (0 = off)")
    distill_teacher: str = opt("", "artifact or run folder of a teacher to distil from (KL + CE); empty = off")
    distill_temperature: float = opt(4.0, "distillation softmax temperature")
    distill_alpha: float = opt(0.7, "weight of the distillation (KL) term; 1 - alpha weighs cross-entropy")
    unfreeze_at: int = opt(0, "with model.freeze=backbone: unfreeze every layer after this epoch (0 = never)")
    unfreeze_lr_scale: float = opt(0.1, "learning-rate factor applied when the backbone unfreezes")
    qat: bool = opt(False, "quantization-aware training (fp32 with fake int8); also writes an int8 TorchScript")
    profile: bool = opt(False, "profile a few training steps with torch.profiler (trace in the run folder)")
    keep_checkpoints: int = opt(0, "also keep the newest N epoch checkpoints (checkpoints/epoch-NNNN.pt) besides "
                                "best.pt and last.pt (0 = with train.save_every: all of them)")
    save_every: int = opt(0, "write an epoch checkpoint every K epochs (0 = every epoch when train.keep_checkpoints "
                          "is set, else none)")
    checkpoint_every_steps: int = opt(-1, "also write last.pt every N optimizer steps inside an epoch, so a killed "
                                      "run resumes mid-epoch (0 = only at epoch ends; -1 = auto: every 500 steps "
                                      "when an epoch has more than 1000, else 0)")
    sync_bn: bool = opt(False, "under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm)")
    seed: int = opt(0, "random seed")
    deterministic: bool = opt(False, "deterministic algorithms (bitwise-reproducible on CPU)")


@dataclass
class RunConfig:
    dir: str = opt("runs", "parent folder of run folders")
    name: str = opt("", "run folder name (default <recipe or model>-<timestamp>)")
    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps (under torchrun: auto, cuda or cpu; "
                      "each rank takes cuda:LOCAL_RANK)")
    threads: int = opt(0, "CPU threads for this process (0 = PyTorch's default; under torchrun the machine's cores "
                       "divided among its ranks)")
    tensorboard: bool = opt(False, "also write TensorBoard events (the same as adding tensorboard to run.trackers)")
    trackers: list[str] = opt([], "experiment trackers fed every epoch and at the end: tensorboard (scalars, "
                              "figures, graph, hparams), mlflow (sqlite:///<run.dir>/mlflow.db, or "
                              "MLFLOW_TRACKING_URI), wandb (offline in the run folder unless an API key is set); comma-separated",
                              ("tensorboard", "mlflow", "wandb"))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what `config.yaml` holds)."""
        return dataclasses.asdict(self)


# the unknown-image score (`cnnmode/unknowns.py`, `calibrate`, `--reject`): here so the CLI can show them
# without importing torch
SCORES = ("combined", "knn", "msp")
INDEX_CAP = 5000  # training embeddings kept in the index
NEIGHBOURS = 10
COVERAGE = 0.95  # the share of in-distribution images `--reject auto` keeps

SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory))
TOP_LEVEL = ("recipe", "description")


def all_keys() -> dict[str, dataclasses.Field]:
    """Every dotted key with its dataclass field (for help text and validation)."""
    keys = {}
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            keys[f"{section}.{f.name}"] = f
    return keys
