// Types of bin/build.mjs (plain JavaScript: it runs before any TypeScript can be loaded).
export declare const ROOT: string;
export declare const DIST: string;
/** dist/PACKAGED: in an installed package, the one build it ships (no sources, never built). */
export declare const PACKAGED: string;
/** Hash of the sources, the lockfile and the build script under `root` (16 hex digits). */
export declare function fingerprint(root?: string): Promise<string>;
/** The current build's entry, building it first if needed; `error` when it cannot be built. */
export declare function ensureBuild(): Promise<{ main: string; dir: string; built: boolean; error?: undefined } | { error: string; main?: undefined; dir?: undefined; built?: undefined }>;
