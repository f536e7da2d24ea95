"""The pipeline file `bbdeploy init` writes, which is also the built-in default of `bbdeploy run`:
every commented line is a key the loader takes (tests/test_run.py uncomments each and loads it)."""

from bbdeploy.exporters.registry import TARGETS

EXAMPLE = """\
# bbdeploy pipeline: every model x target x precision is exported, checked against the float model on
# the validation images and benchmarked on every device. `bbdeploy run THIS_FILE`.
# Stages are cached by content: a second run of an unchanged file executes nothing.

models:                       # names as `bbdeploy models` lists them
  - name: efficientnet_lite0
    weights: imagenet         # imagenet | random | PATH to a state_dict
    # width: 1.0              # width multiplier, where the backbone has one
    # input_size: 224         # default: the backbone's own
    # num_classes: 1000
    # calibration: photos/    # this model's calibration images, instead of calibration.data

targets: all                  # all, or a list: [TARGET_NAMES]

precisions:                   # fp32 | fp16 | int8 | int8-qat, each with its options
  fp32: {}
  int8:
    # calib_method: null      # default: each target's measured best
    # weight_rounding: null   # default: each target's measured best (gptq | nearest | ...)
    # keep_float: []          # layer names left in float
    # min_cosine: 0.95        # fail an artifact whose mean logit cosine with PyTorch is below this
  # int8-qat:                 # quantization-aware training, then each target's int8 path
  #   train_data: photos/     # a folder of in-domain images (labels optional)
  #   epochs: 4
  #   lr: 1.0e-5
  #   batch_size: 32
  #   train_device: auto      # auto | cpu | cuda (auto: a GPU when torch sees one)

calibration:
  data: null                  # folder of images or .npy; null: crops of the built-in photos (recorded)
  size: 300                   # images int8 calibration samples from it

validation:
  data: null                  # folder of images; null: crops of the built-in evaluation photos
  # labels: labels.csv        # path,label rows; or a folder per class
  # limit: 1000               # evaluate this many images, spread over the classes
  # max_drop: 1.0             # gate: accuracy drop in points (needs labels)
  # min_agreement: 0.9        # gate: top-1 agreement with the float model
  # layers: true              # where the int8 error enters: every layer on the artifact's runtime (drift --layers)
  # layer_samples: 16         # images the per-layer comparison uses

devices:                      # name: {url: ...}; `local` is this machine
  local: {}
  # pi5-emulated:             # an emulated arm64 board here: ARM numerics, no latency (prepared on first use)
  #   url: qemu://pi5
  # pi5-a:
  #   url: ssh://pi@192.168.1.20
  #   ssh_options: [IdentityFile=~/.ssh/id_ed25519]   # `ssh -o KEY=VALUE` options
  #   python: python3
  # pixel8:
  #   url: adb://SERIAL
  #   benchmark_binary: benchmark_model   # LiteRT's benchmark_model built for the phone

bench:
  threads: 1
  runs: 50
  warmup: 10
  # exec_precision: default  # float compute where the runtime has the setting: default | f32 | bf16 | f16

output: bbdeploy-run          # artifacts, stage results and report.{json,md,html}
""".replace("TARGET_NAMES", ", ".join(TARGETS))  # the target table's, as `--target` takes them
