// D1 schema (drizzle), one file per area. Server-wide tables; room data lives in the RoomDOs.
// Importers and drizzle-kit (drizzle.config.ts) read the tables through this file.
export * from "./accounts";
export * from "./rooms";
export * from "./user-directory";
export * from "./e2ee";
export * from "./federation";
export * from "./media";
export * from "./push";
export * from "./appservice";
export * from "./admin";
export * from "./oauth";
