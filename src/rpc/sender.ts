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
  inFlightTxnId: string | null;
  sentTxns: number;
  dropped: number;
}
