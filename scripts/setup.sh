#!/usr/bin/env bash
# Set up winnow in ./.venv from the lock file (idempotent, fast when nothing changed).
#
#   bash scripts/setup.sh          the project and its runtime dependencies
#   bash scripts/setup.sh --test   also what the tests need: Debian's real images, the Kafka jars
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=false
[ "${1:-}" = "--test" ] && want_test=true

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user "uv==0.13.9" || python3 -m pip install --quiet "uv==0.13.9"
  export PATH="$HOME/.local/bin:$PATH"
fi

# uv keeps one cache per machine and hard-links from it, so a fresh venv (a CI clone) costs
# seconds once the large wheels (torch) have been downloaded one time.
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
# gcld3 (DataComp's language identifier for the LAION-2B baseline) publishes no wheel for every
# platform (none for CPython 3.11 on Linux x86-64): uv builds it from its sdist, which runs protoc
# and links libprotobuf (Debian protobuf-compiler, libprotobuf-dev). uv caches the built wheel,
# so this build happens once per machine.
if ! .venv/bin/python -c "import gcld3" >/dev/null 2>&1 \
   && { ! command -v protoc >/dev/null 2>&1 || [ ! -e /usr/include/google/protobuf/message.h ]; }; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq protobuf-compiler libprotobuf-dev g++ >/dev/null
fi
uv pip sync --quiet --python .venv/bin/python requirements.lock
uv pip install --quiet --python .venv/bin/python --no-deps -r requirements-nodeps.txt
uv pip install --quiet --python .venv/bin/python --no-deps -e .
.venv/bin/python -m winnow.shared.protogen

if $want_test; then
  # Real images for the tests (Debian openclipart-png; scikit-image's ship in its wheel).
  # WordNet (Debian wordnet-base) for the text-based filter's real test; Fashion-MNIST
  # (dataset-fashion-mnist) for the evaluator's local zero-shot set. Debian's chromium for the
  # report's browser test (driven by Playwright; never a browser Playwright downloads).
  if [ ! -d /usr/share/openclipart/png ] || [ ! -d /usr/share/wordnet ] || [ ! -d /usr/share/datasets/fashion-mnist ] \
     || ! command -v chromium >/dev/null 2>&1; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq openclipart-png wordnet-base dataset-fashion-mnist \
      chromium >/dev/null
  fi
  # Apache Kafka's jars from Maven Central (cached in ~/.cache/winnow).
  .venv/bin/python -m winnow.ops.devstack.kafka --fetch >/dev/null
  # Triton's server binary and python backend, unpacked from the nvidia-pytriton wheel.
  .venv/bin/python -m winnow.ops.triton.server --fetch >/dev/null
  # The real `docker compose` CLI, built from the Go module proxy, validates the compose files
  # offline (tests/deploy/test_compose.py); its tests skip with a reason where Go is missing.
  # kustomize renders k8s/'s overlays for `winnow deploy check` (kubectl's built-in one where present).
  if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1 \
     && [ ! -x "$HOME/.cache/winnow/bin/kustomize" ] && command -v go >/dev/null 2>&1; then
    GOBIN="$HOME/.cache/winnow/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
  fi
  if command -v go >/dev/null 2>&1; then
    bash docker/build-compose-cli.sh >/dev/null || echo "setup: docker compose CLI not built; its checks will skip" >&2
  fi
fi
