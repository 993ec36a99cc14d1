-- A page of a recipient's notifications, newest first, is read from the index in order
-- (issue 19): with is_read before id in the index, every page sorted all of the
-- recipient's notifications in a temporary B-tree. is_read stays, after id, so the unread
-- count still reads the index alone.
DROP INDEX notifications_recipient;
CREATE INDEX notifications_recipient ON notifications(recipient_id, id, is_read);
