"""`bbdeploy run`: the pipeline file (`pipeline_file.py`), its matrix of jobs scheduled fair to devices
(`matrix.py`), each job with its cache (`jobs.py`), where jobs run (`executors.py`: inline, processes,
Ray) and the report that joins their rows (`report.py`)."""
