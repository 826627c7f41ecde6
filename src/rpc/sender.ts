// The SenderDO's RPC types (durable-objects/sender.ts, one outbound queue per destination).

export interface Edu {
  edu_type: string;
  content: Record<string, unknown>;
}

export interface SenderStatus {
  destination: string | null;
  queued: number;
  failures: number;
  down: boolean;
  nextAttemptTs: number | null;
  /** When the current run of failures began (null while healthy) and the last attempt. */
  failureTs: number | null;
  lastAttemptTs: number | null;
  inFlightTxnId: string | null;
  sentTxns: number;
  dropped: number;
}
