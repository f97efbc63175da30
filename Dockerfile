# The image docker-compose.yaml runs: the official Airflow image plus our pinned dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /opt/integrations/
RUN pip install --no-cache-dir -r /opt/integrations/requirements.txt -c /opt/integrations/constraints.txt
