// node-postgres (named queries) and Drizzle ORM on node-postgres through pgshard in
// transaction pooling: users/orders sharded by user id. Every check asserts results.
import assert from "node:assert/strict";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { bigint, integer, numeric, pgTable, primaryKey, serial, text } from "drizzle-orm/pg-core";
import { and, asc, between, eq, sql, sum } from "drizzle-orm";

const config = {
  host: process.env.PGSHARD_HOST,
  port: Number(process.env.PGSHARD_PORT),
  user: "app",
  password: "secret",
  database: "app",
};

const users = pgTable("users", {
  id: bigint("id", { mode: "number" }).primaryKey(),
  name: text("name").notNull(),
  email: text("email"),
});
const orders = pgTable(
  "orders",
  {
    id: bigint("id", { mode: "number" }).notNull(),
    userId: bigint("user_id", { mode: "number" }).notNull(),
    amount: numeric("amount", { precision: 12, scale: 2 }).notNull(),
    status: text("status").notNull().default("new"),
  },
  (t) => ({ pk: primaryKey({ columns: [t.userId, t.id] }) }),
);

const amounts = ["1.25", "2.25", "3.25"];

// The tutorial's schema: serial ids the application never sets.
const accounts = pgTable("accounts", {
  id: serial("id").primaryKey(),
  name: text("name").notNull(),
});
const purchases = pgTable(
  "purchases",
  {
    id: serial("id"),
    accountId: integer("account_id").notNull(),
    amount: numeric("amount", { precision: 12, scale: 2 }).notNull(),
  },
  (t) => ({ pk: primaryKey({ columns: [t.accountId, t.id] }) }),
);

// Drizzle with serial keys: inserts without ids (Drizzle sends DEFAULT), RETURNING the ids
// pgshard generated, orders of one account, the total revenue, a transaction.
async function drizzleSerial() {
  const client = new pg.Client(config);
  await client.connect();
  const db = drizzle(client);
  const created = await db
    .insert(accounts)
    .values([{ name: "ann" }, { name: "bob" }, { name: "cy" }, { name: "dee" }])
    .returning({ id: accounts.id, name: accounts.name });
  assert.deepEqual(created.map((a) => a.name), ["ann", "bob", "cy", "dee"]);
  assert.equal(new Set(created.map((a) => a.id)).size, 4);
  for (const a of created)
    await db.transaction(async (tx) => {
      await tx.insert(purchases).values([
        { accountId: a.id, amount: "10.00" },
        { accountId: a.id, amount: "5.50" },
      ]);
    });
  const one = await db.insert(accounts).values({ name: "eve" }).returning();
  assert.equal(one.length, 1);
  assert.equal(one[0].name, "eve");
  const [back] = await db.select().from(accounts).where(eq(accounts.id, one[0].id));
  assert.deepEqual(back, one[0]);
  const bobs = await db
    .select({ amount: purchases.amount })
    .from(purchases)
    .where(eq(purchases.accountId, created[1].id))
    .orderBy(asc(purchases.amount));
  assert.deepEqual(bobs, [{ amount: "5.50" }, { amount: "10.00" }]);
  const [revenue] = await db.select({ total: sum(purchases.amount) }).from(purchases);
  assert.equal(revenue.total, "62.00");
  await client.end();
}

async function nodePostgres() {
  const client = new pg.Client(config);
  await client.connect();
  const ids = [2001, 2002, 2003, 2004, 2005, 2006];
  await client.query("delete from orders where user_id = any($1::bigint[])", [ids]);
  await client.query("delete from users where id = any($1::bigint[])", [ids]);
  for (const u of ids) {
    await client.query("begin");
    await client.query({ name: "add-user", text: "insert into users (id, name) values ($1, $2)", values: [u, `pg-${u}`] });
    for (let k = 1; k <= 3; k++)
      await client.query({
        name: "add-order",
        text: "insert into orders (id, user_id, amount) values ($1, $2, $3)",
        values: [u * 10 + k, u, amounts[k - 1]],
      });
    await client.query("commit");
  }
  for (let round = 0; round < 3; round++)
    for (const u of ids) {
      const r = await client.query({
        name: "orders-by-user",
        text: "select id, amount from orders where user_id = $1 order by id",
        values: [u],
      });
      assert.deepEqual(r.rows.map((x) => [Number(x.id), x.amount]), [
        [u * 10 + 1, "1.25"],
        [u * 10 + 2, "2.25"],
        [u * 10 + 3, "3.25"],
      ]);
    }
  // A rolled-back transaction leaves nothing.
  await client.query("begin");
  await client.query("insert into users (id, name) values ($1, $2)", [2099, "ghost"]);
  await client.query("rollback");
  const ghost = await client.query("select count(*)::int as n from users where id = $1", [2099]);
  assert.equal(ghost.rows[0].n, 0);
  // Cross-shard report, merged by pgshard.
  const report = await client.query({
    name: "report",
    text: "select count(*)::int as n, sum(amount) as total, max(amount) as top from orders where user_id between $1 and $2",
    values: [2001, 2006],
  });
  assert.deepEqual(report.rows[0], { n: 18, total: "40.50", top: "3.25" });
  const grouped = await client.query(
    "select user_id, sum(amount) as total from orders where user_id between 2001 and 2006 group by user_id order by user_id desc limit 2",
  );
  assert.deepEqual(grouped.rows.map((x) => [Number(x.user_id), x.total]), [
    [2006, "6.75"],
    [2005, "6.75"],
  ]);
  await client.end();
}

async function drizzleOrm() {
  const client = new pg.Client(config);
  await client.connect();
  const db = drizzle(client);
  const ids = [2101, 2102, 2103, 2104];
  await db.delete(orders).where(between(orders.userId, 2101, 2104));
  await db.delete(users).where(between(users.id, 2101, 2104));
  for (const u of ids) {
    await db.transaction(async (tx) => {
      await tx.insert(users).values({ id: u, name: `drizzle-${u}` });
      await tx.insert(orders).values(
        amounts.map((a, k) => ({ id: u * 10 + k + 1, userId: u, amount: a })),
      );
    });
  }
  const mine = await db
    .select({ id: orders.id, amount: orders.amount })
    .from(orders)
    .where(eq(orders.userId, 2102))
    .orderBy(asc(orders.id));
  assert.deepEqual(mine, [
    { id: 21021, amount: "1.25" },
    { id: 21022, amount: "2.25" },
    { id: 21023, amount: "3.25" },
  ]);
  const joined = await db
    .select({ name: users.name, id: orders.id })
    .from(users)
    .innerJoin(orders, eq(orders.userId, users.id))
    .where(and(eq(users.id, 2103), eq(orders.userId, 2103)))
    .orderBy(asc(orders.id));
  assert.equal(joined.length, 3);
  assert.equal(joined[0].name, "drizzle-2103");
  const [report] = await db
    .select({ total: sum(orders.amount), n: sql`count(*)`.mapWith(Number) })
    .from(orders)
    .where(between(orders.userId, 2101, 2104));
  assert.deepEqual(report, { total: "27.00", n: 12 });
  await client.end();
}

// Startup parameters as node-postgres sends them (statement_timeout and
// idle_in_transaction_session_timeout as startup parameters, the rest in options=-c) follow
// the client to every server it gets, and never reach another client sharing the servers.
async function startupParameters() {
  const a = new pg.Client({
    ...config,
    application_name: "node-a",
    statement_timeout: 1234,
    idle_in_transaction_session_timeout: 60000,
    options: "-c work_mem=7MB -c lock_timeout=4321",
  });
  const b = new pg.Client({ ...config, application_name: "node-b" });
  await a.connect();
  await b.connect();
  const show = async (c, name) => (await c.query(`show ${name}`)).rows[0][name];
  for (let i = 0; i < 20; i++) {
    // Interleaved, so the two clients take turns on the same servers.
    assert.equal(await show(a, "statement_timeout"), "1234ms");
    assert.equal(await show(b, "statement_timeout"), "0");
    assert.equal(await show(a, "work_mem"), "7MB");
    assert.equal(await show(b, "work_mem"), "4MB");
    assert.equal(await show(a, "lock_timeout"), "4321ms");
    assert.equal(await show(a, "idle_in_transaction_session_timeout"), "1min");
    assert.equal(await show(b, "idle_in_transaction_session_timeout"), "0");
    assert.equal(await show(a, "application_name"), "node-a");
    assert.equal(await show(b, "application_name"), "node-b");
  }
  // The timeout holds on the server that runs the statement.
  await assert.rejects(a.query("select pg_sleep(3)"), (e) => e.code === "57014");
  assert.equal((await b.query("select pg_sleep(1.5), 1 as one")).rows[0].one, 1);
  // A SET of the session follows it too; RESET goes back to the startup value.
  await a.query("set work_mem = '9MB'");
  assert.equal(await show(b, "work_mem"), "4MB");
  assert.equal(await show(a, "work_mem"), "9MB");
  await a.query("reset work_mem");
  assert.equal(await show(a, "work_mem"), "7MB");
  await a.end();
  await b.end();
}

await nodePostgres();
await drizzleOrm();
await drizzleSerial();
await startupParameters();
console.log("node drivers: all checks passed");
