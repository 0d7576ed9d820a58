-- Master: why an event was refused (it was not produced while its edge
-- controlled the location, by the control log of its epoch); NULL when
-- accepted. Refused events are kept, never dropped.
ALTER TABLE events ADD COLUMN refused TEXT;
