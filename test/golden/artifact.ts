/**
 * A golden training fixture's trained model as a tas artifact: the fixture's layers and
 * sample shape as the model spec, its PyTorch `final_state` as the state (with
 * `num_batches_tracked`, which the fixtures leave out). Serving and ONNX tests compare
 * their outputs with the fixture's eval-mode logits, computed by PyTorch.
 */
import { artifactMetadata, encodeStateDict, parseArtifact, type LoadedArtifact } from '../../src/trainer/artifact/artifact.js';
import type { LayerSpec, ModelSpec } from '../../src/trainer/model/spec.js';
import type { HostTensorMap } from '../../src/trainer/tensor-types.js';
import { stateMap, type FixtureTensor } from './fixture.js';

export interface TrainingFixture {
  model: LayerSpec[];
  data: { x: FixtureTensor };
  final_state: Record<string, FixtureTensor>;
  initial_state: Record<string, FixtureTensor>;
  eval: { x: FixtureTensor; logits: FixtureTensor };
}

/** The bytes of an artifact holding `which` state of the fixture ('final_state' by default). */
export function fixtureArtifactBytes(fx: TrainingFixture, which: 'final_state' | 'initial_state' = 'final_state'): Uint8Array {
  const model: ModelSpec = { input_shape: fx.data.x.shape.slice(1), layers: fx.model };
  const state: HostTensorMap = stateMap(fx[which]);
  for (const key of [...state.keys()]) {
    if (key.endsWith('.running_mean')) state.set(key.replace(/running_mean$/, 'num_batches_tracked'), { shape: [], data: Float32Array.of(1) });
  }
  return encodeStateDict(state, artifactMetadata({ model, runningStats: { source: 'training' }, training: { fixture: true } }));
}

export function fixtureArtifact(fx: TrainingFixture, which: 'final_state' | 'initial_state' = 'final_state'): LoadedArtifact {
  return parseArtifact(fixtureArtifactBytes(fx, which), 'fixture');
}
