ALTER TABLE "members" ADD COLUMN "email" text;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "members_email_idx" ON "members" USING btree ("email");
