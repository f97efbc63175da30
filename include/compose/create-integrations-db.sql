-- Run once by the postgres image on an empty volume: our data lives beside Airflow's metadata.
CREATE DATABASE integrations OWNER airflow;
