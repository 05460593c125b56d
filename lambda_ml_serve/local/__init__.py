"""Running a model locally behind the same HTTP contract as a Lambda Function URL."""
