"""Orders, their items and feedback requests (issue 13).

Only new tables: no existing row changes but schema_info's ``schema_version``, raised
from 1 to 2 so that the previous release, which compares that number with its own,
refuses to run on an upgraded database (bridge/store/models.py, SCHEMA_VERSION).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 12:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SCHEMA_INFO = sa.table("schema_info", sa.column("key", sa.String), sa.column("value", sa.String))


def upgrade() -> None:
    op.create_table('feedback_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('buyer_alias', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('outbox_message_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account', 'order_id')
    )
    with op.batch_alter_table('feedback_request', schema=None) as batch_op:
        batch_op.create_index('ix_feedback_due', ['account', 'state', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_request_outbox_message_id'), ['outbox_message_id'], unique=False)
        batch_op.create_index('ix_feedback_sent', ['account', 'sent_at'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('marketplace', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('sales_channel', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('buyer_alias', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('buyer_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('open_claim', sa.Boolean(), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('purchased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('estimated_delivery_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('estimated_delivery_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account', 'order_id')
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_account_buyer', ['account', 'buyer_alias'], unique=False)

    op.create_table('order_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_row', sa.Integer(), nullable=False),
    sa.Column('item_key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sku', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('asin', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['order_row'], ['orders.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('order_row', 'item_key')
    )
    with op.batch_alter_table('order_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_item_order_row'), ['order_row'], unique=False)

    op.execute(SCHEMA_INFO.update().where(SCHEMA_INFO.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    op.execute(SCHEMA_INFO.update().where(SCHEMA_INFO.c.key == "schema_version").values(value="1"))
    with op.batch_alter_table('order_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_item_order_row'))

    op.drop_table('order_item')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_account_buyer')

    op.drop_table('orders')

    with op.batch_alter_table('feedback_request', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_sent')
        batch_op.drop_index(batch_op.f('ix_feedback_request_outbox_message_id'))
        batch_op.drop_index('ix_feedback_due')

    op.drop_table('feedback_request')
