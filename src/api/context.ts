// What every route of the app shares: the narrow slice of the configuration the HTTP layer
// reads, the engine's host, the compiled openapi.yaml and the metrics.

import type { Config } from '../config.js';
import type { AllowedMethods } from './allowed-methods.js';
import type { EngineHost } from './engine-host.js';
import type { ApiMetrics } from './metrics.js';
import type { OpenApiSpec } from './openapi.js';
import type { RemoteImages } from './remote-image.js';

export type ApiConfig = Pick<
  Config,
  | 'apiKeys'
  | 'allowedOrigins'
  | 'bodyLimitBytes'
  | 'maxUploadBytes'
  | 'maxImages'
  | 'requestTimeoutSeconds'
  | 'retryAfterSeconds'
  | 'allowRemoteImages'
  | 'allowedImageDomains'
  | 'imageFetchTimeoutSeconds'
  | 'headersTimeoutSeconds'
  | 'bodyTimeoutSeconds'
  | 'keepAliveTimeoutSeconds'
  | 'ui'
>;

export interface ServerVersion {
  name: string;
  version: string;
}

export interface ApiContext {
  config: ApiConfig;
  host: EngineHost;
  spec: OpenApiSpec;
  metrics: ApiMetrics;
  remoteImages: RemoteImages;
  allowedMethods: AllowedMethods;
  version: ServerVersion;
  /** Unix seconds when the app was built: the model's `created`. */
  startedAt: number;
}
