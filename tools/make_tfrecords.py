r"""Writes a dataset as sharded TFRecords with sparse partial labels (kpartial/tfrecords.py).

  python tools/make_tfrecords.py \
      --data=coco:../shared/data/coco-tiny/annotations/instances_train2017.json \
      --num_shards=4 --out=records/coco_train
  python tools/train.py --train_data=tfrecord:records/coco_train ...

Image datasets store the encoded image files' bytes (no re-encoding); feature datasets store the
features. --simulation writes a saved simulation's labels instead of the data's. Writing into a
folder that already holds records replaces them only once the new shards are complete (see
kpartial.tfrecords.write_tfrecords): a run that is stopped leaves the old records, or a folder
without an index, never the old index over new shards.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
from absl import app, flags

data = cli.import_without_tensorflow("data")  # the flags are parsed before TensorFlow starts

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "FMT:PATH of the data.")
flags.DEFINE_string("data_options", "", "Reader options key=value,...")
flags.DEFINE_enum("on_bad_input", "error", list(data.ON_BAD_INPUT), "Bad records: error or skip.")
flags.DEFINE_integer("num_shards", 8, "Number of TFRecord files.", lower_bound=1)
flags.DEFINE_string("simulation", "", "Write the labels of this tools/simulate.py file instead.")
flags.DEFINE_string("out", None, "Output folder.")
flags.mark_flags_as_required(["data", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()
    from kpartial import simulate, tfrecords

    with cli.one_line_errors():
        full = data.load_spec(  # verify_images: records hold decodable images only
            FLAGS.data, FLAGS.data_options, FLAGS.on_bad_input, verify_images=True
        )
        labels = simulate.load(FLAGS.simulation, full)[0] if FLAGS.simulation else None
        manifest = tfrecords.write_tfrecords(
            full, FLAGS.out, FLAGS.num_shards, labels, FLAGS.on_bad_input
        )
    skipped = {**full.skipped, **manifest["skipped"]}
    for reason, count in skipped.items():
        print(f"skipped {count} records (on_bad_input=skip): {reason}")
    print(
        f"wrote {manifest['written_examples']} of {manifest['num_examples']} examples in "
        f"{len(manifest['shards'])} shards to {FLAGS.out}"
    )


if __name__ == "__main__":
    app.run(main)
