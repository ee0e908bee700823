"""What the same study would cost on GPUs and on ImageNet: estimates, not measurements.

Training throughput at 224 px of one RTX 3090 with mixed precision (timm's published
benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv, images/s): a PIRL image is about 1.73 views'
worth of pixels at 224 px (the image view and nine 64-px patches), so PIRL trains about
rate / 1.73 images/s on one such GPU; eight GPUs are counted as eight times one (ideal scaling,
no input-pipeline limit), so the figures are lower bounds on the time.
"""

PUBLISHED_TRAIN_IMAGES_PER_SECOND = {
    "resnet50": 826, "mobilenetv2": 1832, "mnasnet_a1": 1859, "mnasnet_b1": 1859,
    "efficientnetlite0": 1675, "efficientnetb0": 1459, "mobilenetv3large": 2167,
    "mobilenetv3small": 5749,
}
PIRL_VIEWS_PER_IMAGE = 1.73
IMAGENET_IMAGES = 1_281_167
PAPER_EPOCHS = 200  # PIRL's short schedule (800 in the long one)


def pirl_images_per_second(backbone, gpus=8):
    """Estimated PIRL training images/s of `gpus` RTX-3090-class GPUs at 224 px."""
    rate = PUBLISHED_TRAIN_IMAGES_PER_SECOND.get(backbone)
    return None if rate is None else gpus * rate / PIRL_VIEWS_PER_IMAGE


def run_hours(backbone, images, epochs, gpus=8):
    """Estimated hours of one PIRL run: `epochs` over `images` at 224 px on `gpus` GPUs."""
    rate = pirl_images_per_second(backbone, gpus)
    return None if rate is None else epochs * images / rate / 3600


def study_hours(run_counts, images, epochs, gpus=8):
    """Estimated hours of the runs {backbone: count}, each `epochs` over `images`."""
    total = 0.0
    for backbone, count in run_counts.items():
        hours = run_hours(backbone, images, epochs, gpus)
        if hours is None:
            return None
        total += count * hours
    return total


def lines(run_counts, train_images, epochs):
    """Markdown lines: the study's runs on one 8-GPU machine, here and on ImageNet."""
    out = ["| runs | this data, 224 px, the same epochs | ImageNet, 224 px, the same epochs | "
           f"ImageNet, {PAPER_EPOCHS} epochs |", "|---|---|---|---|"]
    here = study_hours(run_counts, train_images, epochs)
    inet = study_hours(run_counts, IMAGENET_IMAGES, epochs)
    paper = study_hours(run_counts, IMAGENET_IMAGES, PAPER_EPOCHS)
    counts = ", ".join(f"{n} {b}" for b, n in sorted(run_counts.items()))

    def fmt(hours):
        if hours is None:
            return "-"
        if hours < 1 / 60:
            return "under 1 min"
        if hours < 1:
            return f"{60 * hours:.0f} min"
        return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
    out.append(f"| {counts} | {fmt(here)} | {fmt(inet)} | {fmt(paper)} |")
    return out
