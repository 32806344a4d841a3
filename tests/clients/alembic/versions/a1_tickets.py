"""tickets: a sharded table with a serial key"""
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "tickets",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
    )
    op.execute("insert into tickets (title) values ('first'), ('second')")


def downgrade():
    op.drop_table("tickets")
