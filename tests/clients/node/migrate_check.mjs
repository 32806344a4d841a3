// After `drizzle-kit migrate` ran twice through pgshard (tests/clients/run.sh drizzle-kit):
// the schema is the same on every shard (tables, column, index, the foreign key drizzle-kit
// wraps in a DO block), its bookkeeping table has one row per migration as on one
// PostgreSQL, and the tutorial's flow runs on the migrated schema with serial ids.
import assert from "node:assert/strict";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { integer, numeric, pgTable, primaryKey, serial, text } from "drizzle-orm/pg-core";
import { asc, eq, sum } from "drizzle-orm";

const through = { host: process.env.PGSHARD_HOST, port: Number(process.env.PGSHARD_PORT),
                  user: "app", password: "secret", database: "app" };
const shards = process.env.PGSHARD_SHARDS.split(",").map((p) => ({ ...through, host: "127.0.0.1", port: Number(p) }));

async function one(config, sql) {
  const c = new pg.Client(config);
  await c.connect();
  const r = await c.query(sql);
  await c.end();
  return r.rows;
}

let migrations = 0;
for (const s of shards) {
  const cols = await one(s, "select column_name from information_schema.columns where table_name = 'members' order by 1");
  assert.deepEqual(cols.map((r) => r.column_name), ["email", "id", "name"]);
  const idx = await one(s, "select count(*)::int as n from pg_indexes where indexname = 'members_email_idx'");
  assert.equal(idx[0].n, 1);
  const fk = await one(s, "select count(*)::int as n from pg_constraint where conname = 'member_orders_user_id_members_id_fk'");
  assert.equal(fk[0].n, 1, `foreign key on shard ${s.port}`);
  const m = await one(s, "select count(*)::int as n from drizzle.__drizzle_migrations");
  migrations += m[0].n;
}
assert.equal(migrations, 2, "one bookkeeping row per migration in all");
const seen = await one(through, "select count(*)::int as n from drizzle.__drizzle_migrations");
assert.equal(seen[0].n, 2);

const members = pgTable("members", {
  id: serial("id").primaryKey(),
  name: text("name").notNull(),
  email: text("email"),
});
const memberOrders = pgTable(
  "member_orders",
  {
    id: serial("id"),
    userId: integer("user_id").notNull().references(() => members.id),
    amount: numeric("amount", { precision: 12, scale: 2 }).notNull(),
  },
  (t) => ({ pk: primaryKey({ columns: [t.userId, t.id] }) }),
);
const client = new pg.Client(through);
await client.connect();
const db = drizzle(client);
const created = await db.insert(members).values([{ name: "ann" }, { name: "bob" }]).returning();
assert.deepEqual(created.map((m) => m.name), ["ann", "bob"]);
for (const m of created)
  await db.transaction(async (tx) => {
    await tx.insert(memberOrders).values([{ userId: m.id, amount: "7.00" }, { userId: m.id, amount: "3.00" }]);
  });
const bobs = await db.select({ amount: memberOrders.amount }).from(memberOrders)
  .where(eq(memberOrders.userId, created[1].id)).orderBy(asc(memberOrders.amount));
assert.deepEqual(bobs, [{ amount: "3.00" }, { amount: "7.00" }]);
const [revenue] = await db.select({ total: sum(memberOrders.amount) }).from(memberOrders);
assert.equal(revenue.total, "20.00");
await client.end();
console.log("drizzle-kit migrate: schema on every shard, one row per migration, flow passed");
