#!/bin/sh
# After the migration: each service's least-privilege role (deploy/postgres/roles.sql),
# with the password compose gives it.
set -eu
psql -v ON_ERROR_STOP=1 -f /roles.sql
for r in ps_intake ps_checkout ps_gateway ps_lifecycle ps_webhooks ps_scheduler ps_api; do
  psql -v ON_ERROR_STOP=1 -c "ALTER ROLE $r PASSWORD '$PS_ROLE_PASSWORD'"
done
