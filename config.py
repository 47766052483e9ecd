"""FinReason configuration: flat constants, one line of why each.

Every constant can be overridden for one run with ``--KEY=value`` (type-checked against the
default here; an unknown key is an error) and a whole hardware profile chosen with
``--PROFILE=name``. Overrides are applied inside each script's ``main()`` by
``finreason.cli.parse_args``; importing this module never changes anything.

Out of memory on the GPU? Lower these first, in this order (README, "Out of memory"):
NUM_GENERATIONS, GRPO_MAX_NEW_TOKENS, MAX_SEQ_LEN, SFT_BATCH_SIZE (raise SFT_GRAD_ACCUM to keep
the effective batch), EVAL_BATCH_SIZE, PROMPT_TOKEN_BUDGET.
"""

# --- run ---------------------------------------------------------------------------------
PROFILE = "auto"  # auto | rtx4060 | t4 | a100 | cpu; auto = rtx4060 with CUDA, else cpu
SEED = 42  # one seed for python, numpy, torch and sampling; recorded in every results file
OUTPUT_DIR = "outputs"  # every artifact goes below here (git-ignored)

# --- data --------------------------------------------------------------------------------
DATA_DIR = ""  # a folder with train.json/dev.json/test.json in FinQA's format; "" = auto
FINQA_CACHE_DIR = "~/.cache/finreason/finqa"  # full official files, verified by git blob SHA-1
DOWNLOAD_DATA = True  # try the official download (verified) when no cache; offline falls through
DOWNLOAD_TIMEOUT_S = 20.0  # seconds per file before giving up on the network

# --- model -------------------------------------------------------------------------------
MODEL_NAME = "Qwen/Qwen2.5-1.5B-Instruct"  # hub id, local dir or .gguf; 1.5B fits 8 GB in 4-bit
LOAD_IN_4BIT = True  # QLoRA base: NF4 + double quantisation via bitsandbytes
COMPUTE_DTYPE = "bfloat16"  # bfloat16 | float16 | float32; float16 on cards without bf16 (T4)
USE_UNSLOTH = True  # use Unsloth's fast path when it imports (CUDA only); PEFT otherwise
USE_VLLM = False  # generate with vLLM when installed and a GPU is present (eval and GRPO)

# --- prompt ------------------------------------------------------------------------------
PROMPT_TOKEN_BUDGET = 1024  # tokens for table + text evidence (model's tokenizer); 98%+ recall
MAX_SEQ_LEN = 1536  # prompt + answer tokens in training; lower first if SFT runs out of memory
FEW_SHOT_EXAMPLE = True  # one short worked example in the system prompt so format is never the failure

# --- evaluation --------------------------------------------------------------------------
EVAL_SPLIT = "test"  # dev | test
EVAL_LIMIT = 0  # examples to evaluate; 0 = the whole split
EVAL_BATCH_SIZE = 8  # prompts per generate() call; halve on OOM
MAX_NEW_TOKENS = 256  # answer tokens at evaluation; reasoning + Program + Answer fit in ~150
LENIENT_REL_TOL = 0.01  # lenient metric: relative tolerance (1%) after percent/fraction rescaling
BOOTSTRAP_SAMPLES = 1000  # resamples for 95% confidence intervals

# --- LoRA --------------------------------------------------------------------------------
LORA_R = 16  # adapter rank; 8 halves adapter memory, 32 rarely helps at 1.5B
LORA_ALPHA = 32  # scale = alpha / r; keep at 2r
LORA_DROPOUT = 0.05  # regularisation on a few thousand examples
LORA_TARGET_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # comma-separated

# --- SFT ---------------------------------------------------------------------------------
SFT_TRAIN_LIMIT = 0  # training examples; 0 = all of train
SFT_BATCH_SIZE = 2  # sequences per device step; lower first on OOM
SFT_GRAD_ACCUM = 8  # effective batch = SFT_BATCH_SIZE * SFT_GRAD_ACCUM * GPUs
SFT_LEARNING_RATE = 2e-4  # LoRA learning rate; 1e-4 if loss spikes
SFT_EPOCHS = 3.0  # passes over train; ignored when SFT_MAX_STEPS > 0
SFT_MAX_STEPS = -1  # optimizer steps; -1 = use SFT_EPOCHS
SFT_EVAL_LIMIT = 200  # fixed dev slice evaluated after training
SAVE_STEPS = 50  # checkpoint every N optimizer steps, so a killed run resumes
GRADIENT_CHECKPOINTING = True  # recompute activations in backward: slower, far less memory

# --- GRPO --------------------------------------------------------------------------------
GRPO_TRAIN_LIMIT = 0  # candidate questions before the difficulty filter; 0 = all of train
NUM_GENERATIONS = 4  # completions per question; lower first on OOM, but 2 gives weak signal
GRPO_MAX_NEW_TOKENS = 256  # completion tokens while sampling; second knob on OOM
GRPO_TEMPERATURE = 0.9  # sampling temperature; lower = fewer mixed groups
GRPO_LEARNING_RATE = 5e-6  # RL learning rate on the LoRA weights
GRPO_BETA = 0.0  # KL weight; 0 = no reference model, which is what fits 8 GB
GRPO_LOSS_TYPE = "dr_grpo"  # dr_grpo | dapo | grpo | bnpo (TRL loss_type)
GRPO_BATCH_SIZE = 4  # completions per device step; a multiple of NUM_GENERATIONS
GRPO_GRAD_ACCUM = 4  # steps accumulated per optimizer update
GRPO_MAX_STEPS = 300  # optimizer steps
REWARD_CORRECT_WEIGHT = 1.0  # weight of the strict-correctness reward (the main signal)
REWARD_FORMAT_WEIGHT = 0.1  # weight of the parseable Program/Answer reward
DIFFICULTY_FILTER = True  # keep questions the SFT model sometimes, not always, gets right
DIFFICULTY_MAX_CANDIDATES = 2000  # questions sampled by the filter; sampling is the slow part

# --- app ---------------------------------------------------------------------------------
APP_HOST = "127.0.0.1"  # Streamlit binds here; localhost keeps the demo private
APP_MAX_UPLOAD_KB = 512  # larger uploaded tables are refused with a message

# Hardware profiles: each overrides the constants it names; --KEY=value still wins.
PROFILES = {
    "rtx4060": {},  # 8 GB: the defaults above are written for this card
    "t4": {  # 16 GB, no bf16
        "COMPUTE_DTYPE": "float16",
        "SFT_BATCH_SIZE": 4,
        "SFT_GRAD_ACCUM": 4,
        "NUM_GENERATIONS": 8,
        "GRPO_BATCH_SIZE": 8,
        "EVAL_BATCH_SIZE": 16,
    },
    "a100": {  # 40 GB: room for the 3B model and bigger groups
        "MODEL_NAME": "Qwen/Qwen2.5-3B-Instruct",
        "PROMPT_TOKEN_BUDGET": 1536,
        "MAX_SEQ_LEN": 2048,
        "SFT_BATCH_SIZE": 8,
        "SFT_GRAD_ACCUM": 2,
        "NUM_GENERATIONS": 8,
        "GRPO_BATCH_SIZE": 16,
        "EVAL_BATCH_SIZE": 32,
    },
    "cpu": {  # no CUDA: the embedded SmolLM2-135M and small samples, 00 -> 07 in minutes on 2 cores
        "MODEL_NAME": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "LOAD_IN_4BIT": False,  # NF4 works on CPU (tests cover it) but dequantising every matmul is slower
        "COMPUTE_DTYPE": "float32",
        "PROMPT_TOKEN_BUDGET": 384,  # ~700-token prompts: CPU prefill time grows with every token
        "MAX_SEQ_LEN": 1024,  # prompt + SFT target without truncation at this budget
        "EVAL_LIMIT": 16,
        "EVAL_SPLIT": "dev",
        "EVAL_BATCH_SIZE": 8,
        "MAX_NEW_TOKENS": 96,  # SFT targets are ~70 tokens (p95 ~100)
        "SFT_TRAIN_LIMIT": 64,
        "SFT_BATCH_SIZE": 2,  # the whole cpu pipeline peaked at 15 GB RSS with 2; 4 was OOM-killed
        "SFT_GRAD_ACCUM": 1,
        "SFT_LEARNING_RATE": 5e-4,  # few steps: a higher LoRA rate learns the format in time
        "SFT_MAX_STEPS": 24,
        "SFT_EVAL_LIMIT": 8,
        "SAVE_STEPS": 8,
        "GRADIENT_CHECKPOINTING": False,
        "GRPO_TRAIN_LIMIT": 16,
        "NUM_GENERATIONS": 4,
        "GRPO_MAX_NEW_TOKENS": 64,
        "GRPO_BATCH_SIZE": 4,
        "GRPO_GRAD_ACCUM": 1,
        "GRPO_MAX_STEPS": 3,
        "DIFFICULTY_MAX_CANDIDATES": 8,
        "BOOTSTRAP_SAMPLES": 200,
    },
}
