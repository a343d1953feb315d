"""Which intermediate task? Rank candidate intermediate tasks for a target without the transfer grid.

sample    a fixed random sample of a task's training examples (what both methods read)
semb      dataset similarity: cosine of mean sentence embeddings (Poth et al., 2021)
logme     LogME evidence of the target's labels given a candidate checkpoint's features (You et al., 2021)
evaluate  a ranking against a measured grid: Regret@k, NDCG, Spearman, and their random expectation
rank      `stilts rank`: the rankings, their evaluation, reports/ranking*.csv and an MLflow run
"""
