# syntax=docker/dockerfile:1
#
# Images of the tas service, used by docker-compose.yml. Two targets from one file:
#
#   api     the REST API + scheduler (`tas serve --no-workers`): plain Node 20, no GPU
#           libraries; training happens on the workers. Inference runs here, on the
#           native backend (OpenBLAS).
#   worker  one training worker (`tas worker`): Node 20 on NVIDIA's CUDA runtime image, so
#           @tensorflow/tfjs-node-gpu finds CUDA and cuDNN. tfjs-node-gpu 4.22 is built
#           against TensorFlow 2.9, which wants CUDA 11.2 and cuDNN 8.1; the host needs an
#           NVIDIA driver and the NVIDIA Container Toolkit. Without a GPU the same worker
#           falls back to the native backend (TAS_BACKEND=auto), then wasm.
#
# The service runs from source through tsx (as in development); there is no build step.
# `npm ci` runs the `prepare` script, which generates the Prisma client, builds the
# dashboard (ui/ into ui/dist, served at /ui/) and the native addons (native/: the collective's sums; native/compute: the trainer's kernels,
# against OpenBLAS). Without a compiler or OpenBLAS they are skipped with a line saying
# so, and the JS sums and the wasm backend run instead.
#
# Not built or run on the development machine (no Docker there): documented, not tested.
#
#   docker build --target api -t tas-api .
#   docker build --target worker -t tas-worker .

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04

# Node and npm, copied into the CUDA image below.
FROM ${NODE_IMAGE} AS node

# ---------------------------------------------------------------- api
# Built with a compiler and OpenBLAS's headers; the image keeps only OpenBLAS's library.
FROM ${NODE_IMAGE} AS api-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, so a source change does not reinstall them. Optional dependencies
# (tfjs-node, tfjs-node-gpu: native TensorFlow) are left out: the API does not train.
COPY package.json package-lock.json ./
COPY prisma ./prisma
COPY native ./native
COPY ui ./ui
COPY examples ./examples
RUN npm ci --omit=optional --omit=dev && npm cache clean --force

FROM ${NODE_IMAGE} AS api
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Every interface: API keys are then required (TAS_AUTH defaults to on beyond loopback).
ENV NODE_ENV=production TAS_HOST=0.0.0.0
COPY . .
COPY --from=api-build /app/node_modules ./node_modules
COPY --from=api-build /app/src/service/db/generated ./src/service/db/generated
COPY --from=api-build /app/native ./native
COPY --from=api-build /app/ui/dist ./ui/dist
# REST API and the gRPC inference port.
EXPOSE 8000 8001
CMD ["npx", "tsx", "src/cli/main.ts", "serve", "--no-workers"]

# ---------------------------------------------------------------- worker
FROM ${CUDA_IMAGE} AS worker
COPY --from=node /usr/local/ /usr/local/
# tfjs-node(-gpu)'s install script downloads libtensorflow; ca-certificates for that.
# python3, make and g++ build the native addons (`npm ci`'s prepare script): the
# collective's float32 sums (else the JS sums, same bits, slower) and, with OpenBLAS, the
# native CPU backend (else wasm, several times slower; a GPU worker uses tfjs-node-gpu).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 make g++ libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY prisma ./prisma
COPY native ./native
COPY ui ./ui
COPY examples ./examples
RUN npm ci --omit=dev && npm cache clean --force
COPY . .
# The worker's gRPC port (control + collective).
EXPOSE 7070
CMD ["npx", "tsx", "src/cli/main.ts", "worker", "--host", "0.0.0.0", "--port", "7070"]
