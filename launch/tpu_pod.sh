#!/usr/bin/env bash
# Runs muscle_jax on every worker of a Cloud TPU VM (pod slice), one process per worker.
#
# Two steps, each one `gcloud compute tpus tpu-vm ssh --worker=all`:
#   1. setup: put a checkout on each worker (git clone of REPO_URL, or a copy of this
#      checkout's committed tree) and install it with `pip install -e '.[train]'` plus
#      `jax[tpu]` at the version that setup.cfg pins, in a virtual environment;
#   2. run:   python -m muscle_jax.main --distributed --config=... --workdir=gs://...
#      on all workers at once (jax.distributed.initialize() finds the pod by itself).
# Rerunning the same command resumes from the checkpoints in the workdir.

set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [options] --config=CONFIG --workdir=gs://BUCKET/DIR [-- MAIN_FLAGS...]

Runs `python -m muscle_jax.main --distributed` on every worker of a Cloud TPU VM.

Options (each also settable by the environment variable in brackets):
  --tpu=NAME           TPU VM name                                   [TPU_NAME]  (required)
  --zone=ZONE          its zone, e.g. us-central2-b                  [ZONE]      (required)
  --project=PROJECT    GCP project (default: gcloud's configured one) [PROJECT]
  --config=CONFIG      config file with optional :arg, relative to the repository root,
                       e.g. configs/cifar100.py:num_labeled=2500     [CONFIG]    (required)
  --workdir=gs://...   shared output directory; must be on GCS       [WORKDIR]   (required)
  --repo-url=URL       git URL the workers clone; default: copy this checkout's
                       committed tree (git archive HEAD) to them     [REPO_URL]
  --repo-ref=REF       branch, tag or commit to check out with --repo-url [REPO_REF] (main)
  --remote-dir=DIR     checkout directory on the workers             [REMOTE_DIR] (muscle_jax)
  --jax-version=X.Y.Z  jax[tpu] version; default: setup.cfg's jax pin [JAX_VERSION]
  --data-dir=gs://...  TFDS data directory, passed as --config.data.data_dir [DATA_DIR]
  --skip-setup         only run (the workers are already set up)
  --detach             run under nohup on the workers, log to REMOTE_DIR/muscle_run.log
  --dry-run            print the commands instead of running them
  -h, --help           this text
Arguments after `--` are passed to muscle_jax.main, e.g. -- --config.total_steps=20000

Example:
  launch/tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b \
    --config=configs/cifar100.py:num_labeled=2500 --workdir=gs://my-bucket/muscle/c100_2500 \
    -- --config.model.compute_dtype=bfloat16
EOF
}

die() {
  echo "error: $*" >&2
  echo "Run launch/tpu_pod.sh --help for usage." >&2
  exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-main}"
REMOTE_DIR="${REMOTE_DIR:-muscle_jax}"
JAX_VERSION="${JAX_VERSION:-}"
DATA_DIR="${DATA_DIR:-}"
SKIP_SETUP=0
DETACH=0
DRY_RUN=0
MAIN_FLAGS=()

while (($#)); do
  case "$1" in
    --tpu=*) TPU_NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --repo-url=*) REPO_URL="${1#*=}" ;;
    --repo-ref=*) REPO_REF="${1#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${1#*=}" ;;
    --jax-version=*) JAX_VERSION="${1#*=}" ;;
    --data-dir=*) DATA_DIR="${1#*=}" ;;
    --skip-setup) SKIP_SETUP=1 ;;
    --detach) DETACH=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      MAIN_FLAGS=("$@")
      break
      ;;
    *) die "unknown option '$1' (options take the form --name=value)" ;;
  esac
  shift
done

[[ -n "$TPU_NAME" ]] || die "no TPU name: pass --tpu=NAME or set TPU_NAME"
[[ -n "$ZONE" ]] || die "no zone: pass --zone=ZONE or set ZONE"
[[ -n "$CONFIG" ]] || die "no config: pass --config=configs/FILE.py[:ARG] or set CONFIG"
[[ -n "$WORKDIR" ]] || die "no workdir: pass --workdir=gs://BUCKET/DIR or set WORKDIR"
[[ "$WORKDIR" == gs://* ]] ||
  die "--workdir=$WORKDIR is not on GCS: every worker must write to the same gs:// directory"
[[ -f "$ROOT/${CONFIG%%:*}" ]] || die "config file '${CONFIG%%:*}' not found under $ROOT"
if [[ -z "$JAX_VERSION" ]]; then
  JAX_VERSION="$(sed -n 's/^[[:space:]]*jax>=\([0-9][0-9.]*\).*/\1/p' "$ROOT/setup.cfg" |
    head -n 1)"
  [[ -n "$JAX_VERSION" ]] || die "could not read the jax pin from setup.cfg; pass --jax-version"
fi
[[ "$JAX_VERSION" =~ ^[0-9]+(\.[0-9]+)*([a-z]+[0-9]*)?$ ]] ||
  die "--jax-version=$JAX_VERSION is not a version number such as 0.10.2"

GCLOUD_FLAGS=("--zone=$ZONE")
if [[ -n "$PROJECT" ]]; then
  GCLOUD_FLAGS+=("--project=$PROJECT")
fi

# Joins the arguments into one line that a POSIX shell splits back into them:
# plain words stay as they are, others go in single quotes (double quotes when
# they hold a single quote and nothing that double quotes would expand).
quote() {
  local out="" arg
  for arg in "$@"; do
    if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+="$arg "
    elif [[ "$arg" != *"'"* ]]; then
      out+="'$arg' "
    elif [[ "$arg" != *[\"\$\`\\\!]* ]]; then
      out+="\"$arg\" "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  printf '%s' "${out% }"
}

# Runs "$@", or prints it as a copy-pastable line under --dry-run.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote "$@")"
  else
    "$@"
  fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"
}

remote_dir_q="$(quote "$REMOTE_DIR")"

if ((!SKIP_SETUP)); then
  if [[ -n "$REPO_URL" ]]; then
    fetch="[ -d $remote_dir_q/.git ] || git clone --quiet $(quote "$REPO_URL") $remote_dir_q; \
git -C $remote_dir_q fetch --quiet origin $(quote "$REPO_REF"); \
git -C $remote_dir_q checkout --quiet --detach FETCH_HEAD"
  else
    # Ship this checkout's committed tree (uncommitted edits are not included).
    archive="${TMPDIR:-/tmp}/muscle_jax_src_$$.tar.gz"
    if ((!DRY_RUN)); then
      trap 'rm -f "$archive"' EXIT
    fi
    run git -C "$ROOT" archive --format=tar.gz --output="$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:muscle_jax_src.tar.gz" \
      "${GCLOUD_FLAGS[@]}" --worker=all
    fetch="mkdir -p $remote_dir_q && tar -xzf muscle_jax_src.tar.gz -C $remote_dir_q"
  fi
  setup="set -euo pipefail; $fetch; cd $remote_dir_q; \
[ -x .venv/bin/pip ] || python3 -m venv .venv || \
{ sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv && \
python3 -m venv --clear .venv; }; \
. .venv/bin/activate; \
pip install --quiet --upgrade pip; \
pip install --quiet -e \".[train]\" \"jax[tpu]==$JAX_VERSION\" \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  on_all_workers "$setup"
fi

main_cmd=(python -m muscle_jax.main --distributed "--config=$CONFIG" "--workdir=$WORKDIR")
if [[ -n "$DATA_DIR" ]]; then
  main_cmd+=("--config.data.data_dir=$DATA_DIR")
fi
# (The +alternative form: an empty array under `set -u` breaks bash 3.2, macOS's bash.)
main_cmd+=(${MAIN_FLAGS[@]+"${MAIN_FLAGS[@]}"})
train="set -euo pipefail; cd $remote_dir_q; . .venv/bin/activate; \
export TF_CPP_MIN_LOG_LEVEL=2; "
if ((DETACH)); then
  train+="nohup $(quote "${main_cmd[@]}") >> muscle_run.log 2>&1 < /dev/null & \
echo \"started on \$(hostname); log:\" $remote_dir_q/muscle_run.log"
else
  train+="$(quote "${main_cmd[@]}")"
fi
on_all_workers "$train"
