/** Tests run on the backend TAS_BACKEND selects (CI: auto, which resolves to wasm here). */
import { initBackend } from '../src/trainer/backend.js';

export const backend = await initBackend(undefined, () => {});
