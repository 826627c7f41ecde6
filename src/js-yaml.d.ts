// The part of js-yaml 4 that Lattice uses (the package ships no types).
declare module "js-yaml" {
  export const JSON_SCHEMA: unknown;
  export function load(text: string, options?: { schema?: unknown; filename?: string }): unknown;
  export function dump(value: unknown, options?: Record<string, unknown>): string;
}
