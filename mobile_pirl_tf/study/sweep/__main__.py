"""The contingency sweep of pretext transformations (the proposal's Fig. 3): every transform
alone and every pair, trained with one budget and probed; `mobile_pirl_tf/study/sweep`
documents it.

    python -m mobile_pirl_tf.study.sweep --backbone=mobilenetv3small --image_size=64 \\
        --transforms=crop,cutout,color,sobel --data_dir=$DATA/imagenette/train \\
        --eval_data_dir=$DATA/imagenette --epochs=3 --output_dir=runs/sweep
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from mobile_pirl_tf.core import cli, config  # noqa: E402
from mobile_pirl_tf.core.errors import UsageError  # noqa: E402

flags.DEFINE_list("transforms", ["crop", "cutout", "color", "sobel", "noise", "blur",
                                 "rotation"], "Transforms of the sweep (comma-separated).")
flags.DEFINE_list("extra_cells", [], "Extra compositions to train and probe, e.g. "
                  "jigsaw,jigsaw+rotation.")
cli.show_in_help("Sweep", "transforms", "extra_cells")
cli.define_common("eval_data_dir", "output_dir", group="Sweep", eval_data_dir=None,
                  output_dir="runs/sweep")
cli.define_flags(config.TrainConfig, exclude=("transforms", "model_dir", "monitor_data_dir",
                                              "monitor_every"))


def main(argv):
    del argv
    from mobile_pirl_tf.study import sweep

    f = cli.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    base = cli.config_from_flags(config.TrainConfig, transforms="jigsaw", model_dir="")
    if not f.eval_data_dir:
        raise UsageError("--eval_data_dir is required: a folder with train/<class>/ and "
                         "test/<class>/ for the linear probe")
    rows = sweep.run_sweep(base, f.transforms, f.eval_data_dir, f.output_dir, f.extra_cells)
    png = sweep.heatmap(rows, f.transforms, os.path.join(f.output_dir, "heatmap.png"),
                        f"PIRL {base.backbone} {base.image_size}px, {base.epochs} epochs: "
                        "linear top-1 (%)")
    print(sweep.markdown_table(rows))
    print(f"wrote {os.path.join(f.output_dir, 'results.csv')} and {png}")


if __name__ == "__main__":
    cli.run(main, __doc__)
