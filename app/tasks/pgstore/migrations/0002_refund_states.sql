-- The refund records by state, which /metrics counts at every scrape
-- (CountRefunds): the count reads this index, not the whole table.
CREATE INDEX tasks_refund_states ON tasks (refund_state) WHERE refund_state <> '';
