// drizzle-kit's configuration for the migration test (tests/clients/run.sh migrate):
// the migrations in ./drizzle, applied through pgshard.
export default {
  dialect: "postgresql",
  out: "./drizzle",
  dbCredentials: { url: process.env.DATABASE_URL },
};
