-- The schema of mailbridge's previous release (commit 6d668bb, before Alembic migrations):
-- what its store's SQLModel.metadata.create_all made in a new SQLite database, plus nothing else
-- (it kept its schema number in schema_info, key 'schema_version', value '1').
-- Generated once from that commit's bridge/models.py (the DDL SQLite stored in sqlite_master); never edit it:
-- tests/test_migrations.py upgrades a database made from it.

CREATE TABLE schema_info (
	"key" VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	PRIMARY KEY ("key")
);

CREATE TABLE mailbox_state (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	folder VARCHAR NOT NULL, 
	uidvalidity INTEGER NOT NULL, 
	last_uid INTEGER NOT NULL, 
	history_until_uid INTEGER NOT NULL, 
	initialised_at DATETIME NOT NULL, 
	last_fetch_at DATETIME, 
	last_error VARCHAR, 
	last_error_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (account, folder)
);

CREATE TABLE buyer (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	marketplace VARCHAR NOT NULL, 
	alias VARCHAR NOT NULL, 
	name VARCHAR, 
	created_at DATETIME NOT NULL, 
	opted_out_at DATETIME, 
	opted_out_source VARCHAR, 
	do_not_solicit_until DATETIME, 
	bounced_at DATETIME, 
	bounce_reason VARCHAR, 
	PRIMARY KEY (id), 
	UNIQUE (account, alias)
);

CREATE TABLE quarantine (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	folder VARCHAR NOT NULL, 
	uidvalidity INTEGER NOT NULL, 
	uid INTEGER NOT NULL, 
	message_id VARCHAR, 
	size INTEGER NOT NULL, 
	reason VARCHAR NOT NULL, 
	content_hash VARCHAR, 
	raw BLOB, 
	created_at DATETIME NOT NULL, 
	released_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (account, folder, uidvalidity, uid)
);

CREATE INDEX ix_quarantine_content_hash ON quarantine (content_hash);

CREATE TABLE account_state (
	account VARCHAR NOT NULL, 
	restricted_until DATETIME, 
	restricted_reason VARCHAR, 
	PRIMARY KEY (account)
);

CREATE TABLE audit_log (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	account VARCHAR NOT NULL, 
	event VARCHAR NOT NULL, 
	decision VARCHAR NOT NULL, 
	category VARCHAR, 
	rules VARCHAR NOT NULL, 
	evaluated VARCHAR NOT NULL, 
	buyer VARCHAR, 
	conversation_id INTEGER, 
	message_id VARCHAR, 
	actor VARCHAR, 
	detail VARCHAR, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_audit_account_at ON audit_log (account, at);

CREATE INDEX ix_audit_log_message_id ON audit_log (message_id);

CREATE TABLE conversation (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	"key" VARCHAR NOT NULL, 
	buyer_id INTEGER NOT NULL, 
	order_id VARCHAR, 
	comm_mgr_tok VARCHAR, 
	subject VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	flags VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	last_message_at DATETIME NOT NULL, 
	message_count INTEGER NOT NULL, 
	staff_root_id VARCHAR, 
	staff_last_id VARCHAR, 
	PRIMARY KEY (id), 
	UNIQUE (account, "key"), 
	FOREIGN KEY(buyer_id) REFERENCES buyer (id)
);

CREATE TABLE message (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	folder VARCHAR NOT NULL, 
	uidvalidity INTEGER NOT NULL, 
	uid INTEGER NOT NULL, 
	message_id VARCHAR, 
	content_hash VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	rule_hits VARCHAR NOT NULL, 
	disposition VARCHAR NOT NULL, 
	from_addr VARCHAR NOT NULL, 
	to_addrs VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	sent_date DATETIME, 
	received_at DATETIME NOT NULL, 
	in_reply_to VARCHAR, 
	"references" VARCHAR NOT NULL, 
	order_id VARCHAR, 
	comm_mgr_tok VARCHAR, 
	buyer_address VARCHAR, 
	text VARCHAR NOT NULL, 
	size INTEGER NOT NULL, 
	defects VARCHAR NOT NULL, 
	conversation_id INTEGER, 
	duplicate_of INTEGER, 
	raw BLOB, 
	PRIMARY KEY (id), 
	UNIQUE (account, folder, uidvalidity, uid), 
	FOREIGN KEY(conversation_id) REFERENCES conversation (id)
);

CREATE INDEX ix_message_conversation_id ON message (conversation_id);

CREATE INDEX ix_message_account_hash ON message (account, content_hash);

CREATE INDEX ix_message_account_msgid ON message (account, message_id);

CREATE TABLE outbox (
	id INTEGER NOT NULL, 
	account VARCHAR NOT NULL, 
	message_id VARCHAR NOT NULL, 
	dedupe_key VARCHAR, 
	purpose VARCHAR NOT NULL, 
	category VARCHAR, 
	audience VARCHAR NOT NULL, 
	conversation_id INTEGER, 
	source_message_id INTEGER, 
	envelope_from VARCHAR NOT NULL, 
	recipients VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	raw BLOB NOT NULL, 
	state VARCHAR NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	claimed_by VARCHAR, 
	claimed_at DATETIME, 
	last_error VARCHAR, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	copied_to_sent BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (message_id), 
	UNIQUE (dedupe_key), 
	FOREIGN KEY(conversation_id) REFERENCES conversation (id), 
	FOREIGN KEY(source_message_id) REFERENCES message (id)
);

CREATE INDEX ix_outbox_account ON outbox (account);

CREATE INDEX ix_outbox_conversation_id ON outbox (conversation_id);

CREATE INDEX ix_outbox_due ON outbox (state, next_attempt_at);

