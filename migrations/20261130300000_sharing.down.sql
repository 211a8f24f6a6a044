DROP TABLE run_report;
DROP TABLE run_share;
