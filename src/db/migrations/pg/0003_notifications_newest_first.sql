-- A page of a recipient's notifications, newest first, is read from the index in order
-- (as SQLite's migration 5): is_read after id, not before it.
DROP INDEX notifications_recipient;
CREATE INDEX notifications_recipient ON notifications(recipient_id, id, is_read);
