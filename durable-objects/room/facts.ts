// Whether the room's rarely filled tables hold anything: redactions, relations (events with
// m.relates_to), erased senders, forgotten marks. Read in one statement and kept until the next
// write; a read of a room without any of them then skips their statements. A cold /sync ran
// one statement per room for each (redaction rows twice), and a cold RoomDO's statements cost
// ~0.1 ms each (every statement is prepared anew in a new instance).
import { RELATES_TO } from "./relations";
import type { RoomHead } from "./core";

export type RoomFact = "redactions" | "relations" | "erased" | "forgotten";

const FACTS_SQL = `SELECT EXISTS (SELECT 1 FROM redactions) AS redactions,
  EXISTS (SELECT 1 FROM events WHERE stream IS NOT NULL AND ${RELATES_TO} > '') AS relations,
  EXISTS (SELECT 1 FROM erased_senders) AS erased,
  EXISTS (SELECT 1 FROM forgotten) AS forgotten`;

/** The facts as one value ("0101": redactions, relations, erased, forgotten), read with `meta`
 *  when a RoomDO starts (openSchema's `alsoRead`): a cold /sync then runs no statement for them. */
export const FACTS_AT_START = {
  key: "\u0000facts",
  sql: `SELECT (EXISTS (SELECT 1 FROM redactions)) || (EXISTS (SELECT 1 FROM events WHERE stream IS NOT NULL AND ${RELATES_TO} > '')) || (EXISTS (SELECT 1 FROM erased_senders)) || (EXISTS (SELECT 1 FROM forgotten))`,
};

export class RoomFacts {
  /** What the last read found, and at which write count (RoomHead.writes). */
  private seen?: { writes: number; facts: Record<RoomFact, boolean> };

  /** `atStart`: the FACTS_AT_START value read with `meta`, when it was. */
  constructor(
    private readonly r: { sql: SqlStorage; head: RoomHead },
    atStart?: string,
  ) {
    if (atStart && /^[01]{4}$/.test(atStart)) {
      const [redactions, relations, erased, forgotten] = [...atStart].map((c) => c === "1");
      this.seen = { writes: r.head.writes, facts: { redactions, relations, erased, forgotten } };
    }
  }

  /** False when the room holds no rows of this kind (true: it may; read them). A kind once seen
   *  stays true: a write can only make the answer stale when it was false. (Relations: an
   *  accepted event whose m.relates_to.event_id is a non-empty string, a superset of what
   *  bundled aggregations and /relations read; `> ''` searches the events_relation index.) */
  has(kind: RoomFact): boolean {
    const seen = this.seen;
    if (seen && (seen.facts[kind] || seen.writes === this.r.head.writes)) return seen.facts[kind];
    const row = this.r.sql.exec<Record<RoomFact, number>>(FACTS_SQL).one();
    const facts = { redactions: !!row.redactions, relations: !!row.relations, erased: !!row.erased, forgotten: !!row.forgotten };
    this.seen = { writes: this.r.head.writes, facts };
    return facts[kind];
  }
}
