// Matrix error responses: {"errcode": "M_*", "error": "..."} with the spec's HTTP status.
import type { ContentfulStatusCode } from "hono/utils/http-status";

export class MatrixError extends Error {
  constructor(
    public readonly status: ContentfulStatusCode,
    public readonly errcode: string,
    message: string,
    public readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
  toJSON() {
    // A UIA "start here" challenge carries no errcode at all.
    if (!this.errcode) return { ...this.extra };
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const badJson = (msg: string) => new MatrixError(400, "M_BAD_JSON", msg);
export const notJson = () => new MatrixError(400, "M_NOT_JSON", "Request body is not valid JSON");
export const forbidden = (msg: string) => new MatrixError(403, "M_FORBIDDEN", msg);
export const notFound = (msg = "Not found") => new MatrixError(404, "M_NOT_FOUND", msg);
export const invalidParam = (msg: string) => new MatrixError(400, "M_INVALID_PARAM", msg);
export const missingParam = (msg: string) => new MatrixError(400, "M_MISSING_PARAM", msg);
export const unrecognized = (msg = "Unrecognized request") => new MatrixError(404, "M_UNRECOGNIZED", msg);
export const tooLarge = (msg: string) => new MatrixError(413, "M_TOO_LARGE", msg);
