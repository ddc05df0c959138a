-- Runs once when the compose Postgres volume is created. Paddock's migration grants the role read
-- access to schema `ops`; Grafana logs in as `grafana`, a member of it.
CREATE ROLE paddock_readonly NOLOGIN;
CREATE ROLE grafana LOGIN PASSWORD 'grafana' IN ROLE paddock_readonly;
