// PUT /_matrix/federation/v1/send/{txnId} (spec: Server-Server API "Transactions").
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseBody } from "../validate";
import { processTransaction } from "../../services/federation/inbound";

const transactionBody = z
  .object({
    origin: z.string().optional(),
    origin_server_ts: z.number().optional(),
    pdus: z.array(z.unknown()),
    edus: z.array(z.unknown()).optional(),
  })
  .loose();

export const transactions = new Hono<AppEnv>();

transactions.put("/v1/send/:txnId", async (c) => {
  const body = await parseBody(c, transactionBody);
  const result = await processTransaction(c.env, c.var.config, c.var.origin, c.req.param("txnId"), body);
  return c.json(result);
});
