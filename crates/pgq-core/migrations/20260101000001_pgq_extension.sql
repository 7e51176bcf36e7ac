-- The pgq extension (SkyTools PgQ 3.x). Packaged on Debian/Ubuntu as postgresql-<major>-pgq3.
-- `pgq_core::install` checks that the package is available before running this, so a missing
-- package gives an error that names it.
CREATE EXTENSION IF NOT EXISTS pgq;
