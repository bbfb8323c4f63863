# tinyllava-serve: CPU image by default; GPU image with --build-arg ORT_EP=cuda.
#
#   docker build -t tinyllava-serve .                                   # CPU
#   docker build -t tinyllava-serve:cuda --build-arg ORT_EP=cuda .      # CUDA (needs NuGet access at build)
#   docker run -p 8000:8000 -v $PWD/models:/app/models tinyllava-serve --model /app/models/my-package
#
# The exporter (Python, PyTorch) is not in the image: export packages beforehand with
# `npm run export`, then mount or copy them in. Nothing is downloaded at run time.

ARG ORT_EP=cpu

# ---- build: compile TypeScript with the dev dependencies ---------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The CUDA provider is fetched (from NuGet, by onnxruntime-node's install script) only in the
# runtime stage of the cuda variant; here it is always skipped.
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts
COPY tsconfig.json openapi.yaml ./
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json

# ---- runtime base per execution provider ------------------------------------------------------
FROM node:20-bookworm-slim AS runtime-cpu
ENV EXECUTION_PROVIDER=cpu

# CUDA 12 + cuDNN 9 runtime libraries, with Node 20 from the official binary tarball's image.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS runtime-cuda
COPY --from=node:20-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=node:20-bookworm-slim /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ENV EXECUTION_PROVIDER=cuda

# ---- final -------------------------------------------------------------------------------------
FROM runtime-${ORT_EP}
ARG ORT_EP
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000 MODEL_DIR=/app/models/tiny-random-qwen2-siglip
COPY package.json package-lock.json .npmrc ./
# cpu: no install scripts (the CUDA provider download is skipped); cuda: run onnxruntime-node's
# install script with ONNXRUNTIME_NODE_INSTALL=cuda12, which puts libonnxruntime_providers_cuda.so
# next to the binding (it needs NuGet, so build this variant where NuGet is reachable).
RUN if [ "$ORT_EP" = "cuda" ]; then \
      npm ci --omit=dev --ignore-scripts && \
      (cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node script/install.js); \
    else \
      ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --ignore-scripts; \
    fi && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY openapi.yaml ./
COPY models ./models
EXPOSE 8000
USER node
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "dist/src/cli/serve.js"]
