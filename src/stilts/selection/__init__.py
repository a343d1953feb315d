"""Which intermediate task? Rank candidate intermediate tasks for a target without the transfer grid.

sample          a fixed random sample of a task's training examples (what semb and logme read)
semb            dataset similarity: cosine of mean sentence embeddings (Poth et al., 2021)
logme           LogME evidence of the target's labels given a candidate checkpoint's features (You et al., 2021)
grids           measured transfer grids (MLflow experiments) and their per-target normalised gains
ridge           ridge regression by the normal equations (prior and harm fit with it)
prior           source + target effects fitted on the grids, each target left out of its own fit
harm            the target effect predicted from cheap facts: P(a candidate beats the baseline)
signals         semb and logme where their data and checkpoints exist (absent: no signal, not an error)
hybrid          prior, semb and logme combined, weights learned leave-one-target-out on the grids
evaluate        a ranking against a measured grid: Regret@k, NDCG, Spearman, AUROC, Brier, random expectation
rank            `stilts rank`: the rankings, their evaluation, reports/ranking*.csv and an MLflow run
ranking_report  what `stilts rank` prints and report.md's "Which intermediate task?" section
belief          `stilts select`'s posterior over a target's arms (the baseline and the candidates)
prior_belief    the prior of that posterior, from the prior's public functions (the one place that reads them)
lookahead       plans of the next runs and their value (the knowledge gradient of a batch)
rule            the next run, when to stop, and the answer
select          `stilts select`: the loop, the study it writes, its cells run through DVC or the Dask runner
select_record   the selection's trail, MLflow run, printed lines and report section
"""
