"""Multiple-choice QA tasks (CommonsenseQA, Cosmos QA, SocialIQA, HellaSwag) in their official layouts."""

from stilts.tasks.base import Task
from stilts.tasks.registry import register


def commonsenseqa_row(row: dict) -> dict:
    """Official layout: {"question": {"stem", "choices": [{"label": "A", "text"}]}, "answerKey": "A"}."""
    q = row.get("question") or {}
    choices = sorted(q.get("choices") or [], key=lambda c: c.get("label", ""))
    letters = [c.get("label") for c in choices]
    key = row.get("answerKey")
    return {"stem": q.get("stem"), "choices": [c.get("text") for c in choices],
            "label": letters.index(key) if key in letters else key}


def hellaswag_row(row: dict) -> dict:
    return {**row, "context": row.get("ctx"), "choices": row.get("endings")}


register(
    Task("commonsenseqa", "multiple_choice", "accuracy", files={"train": "train_rand_split.jsonl",
                                                                "validation": "dev_rand_split.jsonl"},
         fields={"context": "stem", "choices": "choices"}, convert=commonsenseqa_row,
         hub="commonsense_qa", roles=("intermediate", "target"), family="qa", train_size=9_741, dev_size=1_221),
    Task("cosmosqa", "multiple_choice", "accuracy", format="csv",
         files={"train": "train.csv", "validation": "valid.csv"},
         fields={"context": "context", "question": "question", "choices": ["answer0", "answer1", "answer2", "answer3"]},
         hub="cosmos_qa", roles=("intermediate", "target"), family="qa", train_size=25_262, dev_size=2_985),
    Task("socialiqa", "multiple_choice", "accuracy", format="jsonl_lst",
         files={"train": "train.jsonl", "validation": "dev.jsonl"},
         fields={"context": "context", "question": "question", "choices": ["answerA", "answerB", "answerC"],
                 "label_offset": 1},
         hub="social_i_qa", roles=("intermediate",), family="qa", train_size=33_410, dev_size=1_954),
    Task("hellaswag", "multiple_choice", "accuracy", files={"train": "hellaswag_train.jsonl",
                                                            "validation": "hellaswag_val.jsonl"},
         fields={"context": "context", "choices": "choices"}, convert=hellaswag_row,
         hub="hellaswag", roles=("intermediate",), family="qa", train_size=39_905, dev_size=10_042),
)
