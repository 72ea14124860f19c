/**
 * The gRPC boundary's mapping: the gRPC status of each inference error code. The inference
 * service raises `InferenceError`s with codes and no protocol status; this table is the
 * only place their gRPC statuses are chosen (the REST binding's twin is
 * src/api/rest/http-errors.ts). Input errors are INVALID_ARGUMENT; unknown models
 * NOT_FOUND and models that are not ready UNAVAILABLE, as Triton answers them, so a client
 * can tell "wrong request" from "try elsewhere".
 */
import { status } from '@grpc/grpc-js';
import type { InferenceErrorCode } from '../../inference/errors.js';

export const GRPC_STATUS: Readonly<Record<InferenceErrorCode, status>> = {
  MODEL_NOT_FOUND: status.NOT_FOUND,
  MODEL_NOT_READY: status.UNAVAILABLE,
  INVALID_INPUT: status.INVALID_ARGUMENT,
  DATATYPE_MISMATCH: status.INVALID_ARGUMENT,
  SHAPE_MISMATCH: status.INVALID_ARGUMENT,
  BATCH_TOO_LARGE: status.INVALID_ARGUMENT,
  UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
};
