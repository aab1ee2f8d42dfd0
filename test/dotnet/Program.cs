// A .NET client of the retroflect control pipe, built the same way as the PowerShell module's
// Private/PipeClient.ps1: the same pipe-name mapping (Windows: pipe name; Linux: absolute socket path, because
// .NET on Unix uses a rooted pipe name as a Unix socket path as is), NamedPipeClientStream with
// PipeOptions.Asynchronous, hello first (with the token file on Windows), UTF-8 without BOM, one JSON object per
// line, a reply time-out via ReadLineAsync + Wait.
//
// Usage: retroflect-pipe-client <pipe> <method> [<params-json>] [<method> [<params-json>]]...
// Prints one line per reply: the reply JSON exactly as received, so a test can assert on the engine's answers.
// A params argument is recognised by starting with '{'. Exit code 0 when every reply arrived (errors included),
// 7 when nothing answers on the pipe (like the CLI), 1 on a time-out or a broken connection.
using System.IO.Pipes;
using System.Text;
using System.Text.Json;

const int ConnectTimeoutMs = 2000;   // as $script:DefaultConnectTimeoutMs in the module
const int ReplyTimeoutMs = 15000;    // as $script:DefaultReplyTimeoutMs
const int ProtocolVersion = 1;
const string LinuxSocketDir = "/run/retroflect";

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: retroflect-pipe-client <pipe> <method> [<params-json>] ...");
    return 2;
}

var pipe = args[0];
string clientPipeName;
string name;
if (OperatingSystem.IsWindows())
{
    name = pipe.StartsWith(@"\\.\pipe\", StringComparison.OrdinalIgnoreCase) ? pipe[9..] : pipe;
    clientPipeName = name;
}
else if (pipe.StartsWith('/'))
{
    name = Path.GetFileNameWithoutExtension(pipe);
    clientPipeName = pipe;
}
else
{
    name = pipe;
    clientPipeName = $"{LinuxSocketDir}/{pipe}.sock";
}

var requests = new List<(string Method, JsonElement? Params)>();
for (var i = 1; i < args.Length; i++)
{
    var method = args[i];
    JsonElement? p = null;
    if (i + 1 < args.Length && args[i + 1].TrimStart().StartsWith('{'))
    {
        p = JsonDocument.Parse(args[++i]).RootElement.Clone();
    }
    requests.Add((method, p));
}

using var stream = new NamedPipeClientStream(".", clientPipeName, PipeDirection.InOut, PipeOptions.Asynchronous);
try
{
    stream.Connect(ConnectTimeoutMs);
}
catch (TimeoutException)
{
    Console.Error.WriteLine($"E_ENGINE_NOT_RUNNING: nothing answered on {clientPipeName} within {ConnectTimeoutMs} ms");
    return 7;
}
catch (UnauthorizedAccessException e)
{
    Console.Error.WriteLine($"E_ACCESS_DENIED: {e.Message}");
    return 3;
}

var utf8 = new UTF8Encoding(false);
using var reader = new StreamReader(stream, utf8, false, 4096, leaveOpen: true);
var nextId = 1;

// hello first, as the module does; on Windows with the token from %ProgramData%\Retroflect\<name>.token.
var hello = new Dictionary<string, object?> { ["protocol"] = ProtocolVersion, ["client"] = "retroflect-pipe-client/0.1.0" };
if (OperatingSystem.IsWindows())
{
    var tokenPath = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.CommonApplicationData), "Retroflect", name + ".token");
    hello["token"] = File.ReadAllText(tokenPath).Trim();
}
var all = new List<(string Method, JsonElement? Params)> { ("hello", JsonSerializer.SerializeToElement(hello)) };
all.AddRange(requests);

foreach (var (method, p) in all)
{
    var id = nextId++;
    var request = new Dictionary<string, object?> { ["id"] = id, ["method"] = method };
    if (p is not null) request["params"] = p.Value;
    var bytes = utf8.GetBytes(JsonSerializer.Serialize(request) + "\n");
    try
    {
        stream.Write(bytes, 0, bytes.Length);
        stream.Flush();
    }
    catch (IOException e)
    {
        Console.Error.WriteLine($"connection closed while sending '{method}': {e.Message}");
        return 1;
    }

    while (true)
    {
        var task = reader.ReadLineAsync();
        if (!task.Wait(ReplyTimeoutMs))
        {
            Console.Error.WriteLine($"E_TIMEOUT: no reply to '{method}' within {ReplyTimeoutMs} ms");
            return 1;
        }
        var line = task.Result;
        if (line is null)
        {
            Console.Error.WriteLine($"connection closed before the reply to '{method}'");
            return 1;
        }
        if (string.IsNullOrWhiteSpace(line)) continue;
        using var doc = JsonDocument.Parse(line);
        if (!doc.RootElement.TryGetProperty("id", out var replyId)) continue; // notification
        if (replyId.ValueKind == JsonValueKind.Number && replyId.GetInt32() != id)
        {
            Console.Error.WriteLine($"reply id {replyId} while {id} was expected");
            return 1;
        }
        Console.WriteLine(line);
        break;
    }
}
return 0;
