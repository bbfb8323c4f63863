# tinyllava-serve images: CPU (the default target) and CUDA (`--target cuda`).
#
#   docker build -t tinyllava-serve .                              # CPU
#   docker build --target cuda -t tinyllava-serve:cuda .           # NVIDIA GPU (CUDA 13, driver R580+)
#   docker run -p 8000:8000 tinyllava-serve                        # serves the bundled demo model
#   docker run -p 8000:8000 -v $PWD/models:/models:ro -e MODEL_DIR=/models/my-package tinyllava-serve
#
# Model packages are not in the image (export them with `npm run export`, mount them read-only);
# only the bundled demo package (models/tinyllava-demo, a few MB) is, so that a run without a
# volume still serves.
# Nothing is downloaded at run time. The guide: docs/deployment.md.
#
# Build arguments: BASE_IMAGE, a Node 20 image on Debian bookworm (the build and CPU stages; the
# tests pass one made locally), and CUDA_BASE_IMAGE, the CUDA 13 image the GPU image runs on:
# NVIDIA's `base` flavour suffices (the container toolkit's settings, no libraries), because
# cuBLAS, cuDNN and the rest come from PyPI with the provider (a `runtime` one would hold a second
# copy of them).
ARG BASE_IMAGE=node:20-bookworm-slim
ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---- deps: the toolchain and node_modules, cached until package-lock.json changes -------------
FROM ${BASE_IMAGE} AS deps
# cargo for the addons under native/ (tools/build-native.sh): Debian's cargo-web/rustc-web, the
# newer Rust that bookworm carries for its browsers (bookworm-security), with gcc as the linker.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cargo-web ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Scripts run below, once the sources are in (the root package's own `install` builds the addons).
RUN npm ci --ignore-scripts

# ---- build: TypeScript, the Rust addons, production node_modules ------------------------------
FROM deps AS build
COPY . .
# Cargo's downloads and target folder persist between builds (BuildKit and buildah cache mounts).
RUN --mount=type=cache,target=/root/.cargo/registry --mount=type=cache,target=/app/native/target \
    npm run build:native && npm run build && npm prune --omit=dev \
 && bash tools/deploy/prune-native-binaries.sh node_modules \
 && bash tools/deploy/runtime-files.sh /app /out

# ---- CUDA providers: onnxruntime-gpu and NVIDIA's CUDA 13 libraries, from PyPI ----------------
# `npm run setup:cuda` puts them in .cuda/, where the server looks (CUDA_DIR's default): about
# 1.6 GB of wheels. Installing them needs no GPU.
FROM build AS cuda-providers
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN npm run setup:cuda -- /out/.cuda

# ---- the CUDA image (`--target cuda`) ----------------------------------------------------------
# The same as the CPU image below, on NVIDIA's CUDA 13 runtime, with Node's binary from the Node
# image and the providers from the stage above. Built without a GPU; running it needs one (and
# the NVIDIA container toolkit: `docker run --gpus all`).
FROM ${BASE_IMAGE} AS node
FROM ${CUDA_BASE_IMAGE} AS cuda
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN groupadd --system --gid 10001 tinyllava \
 && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin tinyllava
COPY --from=cuda-providers /out /app
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000 EXECUTION_PROVIDER=cuda
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli/serve.js"]

# ---- the CPU image (the last stage: what a plain `docker build` makes) -------------------------
FROM ${BASE_IMAGE} AS cpu
# A user of our own, with the same uid in both images (the CUDA base has no `node` user),
# numeric in USER so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 tinyllava \
 && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin tinyllava
COPY --from=build /out /app
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000
EXPOSE 8000
USER 10001:10001
# Readiness, not liveness: 503 while the model loads and from SIGTERM on (docs/deployment.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node is the container's main process (no npm, no shell), so SIGTERM reaches the server.
ENTRYPOINT ["node", "dist/src/cli/serve.js"]
