"""The proposal's Table I: parameters, multiply-adds and float32 LiteRT latency of every backbone.

    python benchmarks/table1.py --image_size=224 [--backbones=mobilenetv2,mnasnet_a1]
        [--output_dir=.] [--runs=50] [--threads=1,2]

Writes table1.md and table1.csv (`mobile_pirl_tf.deployment.complexity` documents the columns).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from mobile_pirl_tf.core import cli  # noqa: E402
from mobile_pirl_tf.core.config import BACKBONE_WIDTHS, check_backbone  # noqa: E402
from mobile_pirl_tf.core.errors import UsageError  # noqa: E402

cli.define_common("image_size", "output_dir", "threads", group="Table I", image_size=224,
                  output_dir=".")
flags.DEFINE_list("backbones", list(BACKBONE_WIDTHS), "Backbones to compare.")
flags.DEFINE_integer("runs", 50, "Timed LiteRT invokes per thread count (0: no latency).")
cli.show_in_help("Table I", "backbones", "runs")


def main(argv):
    del argv
    from absl import logging

    f = cli.FLAGS
    logging.set_verbosity(logging.WARNING)
    for name in f.backbones:
        check_backbone(name)
    from mobile_pirl_tf.deployment.complexity import add_ratios, describe, markdown, write_table

    try:
        threads = [int(t) for t in f.threads]
    except ValueError:
        raise UsageError(f"--threads={','.join(f.threads)}: give integers") from None
    rows = []
    for i, name in enumerate(f.backbones, 1):
        print(f"[{i}/{len(f.backbones)}] {name} at {f.image_size} px ...", flush=True)
        rows.append(describe(name, f.image_size, f.runs, threads))
    add_ratios(rows)
    table = markdown(rows, threads)
    print(table)
    for path in write_table(rows, threads, f.output_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main, __doc__)
