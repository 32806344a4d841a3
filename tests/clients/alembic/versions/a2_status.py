"""tickets.status, and an index"""
import sqlalchemy as sa
from alembic import op

revision = "a2"
down_revision = "a1"


def upgrade():
    op.add_column("tickets", sa.Column("status", sa.Text, server_default="open", nullable=False))
    op.create_index("tickets_status", "tickets", ["status"])
    op.execute("insert into tickets (title, status) values ('third', 'done')")


def downgrade():
    op.drop_index("tickets_status")
    op.drop_column("tickets", "status")
