/**
 * The gRPC boundary's mapping: the gRPC status of each inference error code. The inference
 * service raises `InferenceError`s with codes and no protocol status; this table is the
 * only place their gRPC statuses are chosen (the REST binding's twin is
 * src/api/rest/http-errors.ts). Input errors are INVALID_ARGUMENT; unknown models
 * NOT_FOUND and models that are not ready UNAVAILABLE, as Triton answers them, so a client
 * can tell "wrong request" from "try elsewhere". A key that is missing, unknown or revoked
 * is UNAUTHENTICATED; another tenant's model is NOT_FOUND, as a model that does not exist.
 */
import { status } from '@grpc/grpc-js';
import type { InferenceErrorCode } from '../../inference/errors.js';

/** The binding's own codes: requests it refuses before inference sees them. */
export const GRPC_AUTH_CODES = ['TAS_ERR_UNAUTHENTICATED', 'TAS_ERR_RATE_LIMITED'] as const;
export type GrpcAuthCode = (typeof GRPC_AUTH_CODES)[number];

export const GRPC_STATUS: Readonly<Record<InferenceErrorCode | GrpcAuthCode, status>> = {
  TAS_ERR_UNAUTHENTICATED: status.UNAUTHENTICATED,
  TAS_ERR_RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  MODEL_NOT_FOUND: status.NOT_FOUND,
  MODEL_NOT_READY: status.UNAVAILABLE,
  INVALID_INPUT: status.INVALID_ARGUMENT,
  DATATYPE_MISMATCH: status.INVALID_ARGUMENT,
  SHAPE_MISMATCH: status.INVALID_ARGUMENT,
  BATCH_TOO_LARGE: status.INVALID_ARGUMENT,
  UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
};
