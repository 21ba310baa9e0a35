"""Running a job: options, assembly, the thread harness, and the file and live drivers."""
