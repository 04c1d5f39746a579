--[[
hpcc's submit filter for Slurm 22.05 (cli_filter/lua), shipped by hpcc-slurm.

Install it as cli_filter.lua next to slurm.conf on every submit host and set
CliFilterPlugins=cli_filter/lua in slurm.conf (docs/slurm.md "Scheduling").
sbatch, srun and salloc then run slurm_cli_pre_submit on the submit host,
as the user, before the job is sent to slurmctld. For a job with
--container=B it asks `hpcc match --submit`, which scores B against the
saved node fingerprints of the policy's [scheduling] fleet (cut to the job's
partition by sinfo) under [scheduling] submit:

  enforce  the job gets --constraint=(USER)&(HPCC), or is refused with one
           line naming the image, the partition and what is missing;
  warn     the job is submitted unchanged, the user is told;
  off      nothing.

When hpcc cannot decide (not installed, no fleet, sinfo silent, timeout)
the job is submitted unchanged with a warning: the node still checks the
image at launch (hpcc_spank.so, hpcc-runtime), so failing open here only
loses the early answer, never the check.

Lua 5.1 (Debian's Slurm 22.05): io.popen's close() gives no exit status, so
the command line echoes it as the last line (hpcc-exit=N).
--]]

local HPCC = "/usr/bin/hpcc"
-- Bound of the whole call; hpcc bounds itself and sinfo with
-- [scheduling] timeout_ms (default 5 s), this bounds hpcc.
local TIMEOUT_S = "10"
local MAX_LINES = 20

-- One shell word, whatever the user's text holds.
local function q(s)
	return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

local function unset(v)
	return v == nil or v == "" or v == "(null)"
end

function slurm_cli_setup_defaults(options, early)
	return slurm.SUCCESS
end

function slurm_cli_post_submit(offset, jobid, stepid)
	return slurm.SUCCESS
end

function slurm_cli_pre_submit(options, offset)
	local bundle = options["container"]
	if unset(bundle) then
		return slurm.SUCCESS
	end
	-- A step inside an existing allocation cannot be placed any more: the
	-- nodes are chosen. The node's own check at launch still applies.
	-- (pcall: an option name a Slurm release does not know must not fail
	-- every srun of every batch script.)
	local got, kind = pcall(function() return options["type"] end)
	if os.getenv("SLURM_JOB_ID") ~= nil and not (got and kind == "sbatch") then
		return slurm.SUCCESS
	end
	local cmd = "/usr/bin/timeout -k 1 " .. TIMEOUT_S .. " " .. HPCC
		.. " match --submit --bundle " .. q(bundle)
	if not unset(options["partition"]) then
		cmd = cmd .. " --partition " .. q(options["partition"])
	end
	if not unset(options["constraint"]) then
		cmd = cmd .. " --user-constraint " .. q(options["constraint"])
	end
	cmd = cmd .. " </dev/null 2>&1; echo \"hpcc-exit=$?\""
	local f = io.popen(cmd, "r")
	if f == nil then
		slurm.log_error("hpcc: cannot run %s: submitted without the placement check", HPCC)
		return slurm.SUCCESS
	end
	local constraint, code, said = nil, nil, 0
	for line in f:lines() do
		local c = string.match(line, "^constraint (.+)$")
		local e = string.match(line, "^hpcc%-exit=(%d+)$")
		if c ~= nil then
			constraint = c
		elseif e ~= nil then
			code = tonumber(e)
		elseif said < MAX_LINES then
			said = said + 1
			slurm.log_error("%s", line)
		end
	end
	f:close()
	if code == 0 then
		if constraint ~= nil then
			options["constraint"] = constraint
		end
		return slurm.SUCCESS
	elseif code == 2 then
		return slurm.ERROR
	end
	slurm.log_error("hpcc: the placement check failed (exit %s): submitted unchanged; the node checks the image at launch",
		tostring(code))
	return slurm.SUCCESS
end
