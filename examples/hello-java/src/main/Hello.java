import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

/** hello-java: the second sample Shipline delivers; compiled with javac, run on the host's JRE. */
public final class Hello {
    static final String VERSION = "1.0.0";

    /** Status and body for a GET of path. */
    static String[] respond(String path) {
        switch (path) {
            case "/healthz":
                return new String[] {"200", "ok\n"};
            case "/version":
                return new String[] {"200", "{\"version\": \"" + VERSION + "\", \"sha\": \"" + revision() + "\"}\n"};
            case "/":
                String greeting = System.getenv().getOrDefault("GREETING", "hello");
                return new String[] {"200", greeting + " from hello-java " + VERSION + "\n"};
            default:
                return new String[] {"404", "not found\n"};
        }
    }

    /** The git sha the build wrote next to the classes, or "unknown". */
    static String revision() {
        try (InputStream in = Hello.class.getResourceAsStream("/REVISION")) {
            return in == null ? "unknown" : new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
        } catch (IOException e) {
            return "unknown";
        }
    }

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8000"));
        String bind = System.getenv().getOrDefault("BIND", "127.0.0.1");  // the address Shipline gives it
        HttpServer server = HttpServer.create(new InetSocketAddress(bind, port), 64);
        server.createContext("/", exchange -> {
            String[] answer = respond(exchange.getRequestURI().getPath());
            byte[] body = answer[1].getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(Integer.parseInt(answer[0]), body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        // Docker stops the container with SIGTERM: finish in-flight requests, then exit.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        server.start();
        System.out.println("hello-java listening on port " + port);
    }
}
