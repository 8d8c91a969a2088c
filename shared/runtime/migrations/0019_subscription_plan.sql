-- A subscription's own plan beside its mandate's (Moment's subscription_options):
-- the UTC time of day charges run (NULL: the scheduler's SCHEDULER_CHARGE_TIME)
-- and the last day one may fall on (NULL: the mandate's end, if any).
ALTER TABLE schedules ADD COLUMN charge_time TIME, ADD COLUMN end_date DATE;
