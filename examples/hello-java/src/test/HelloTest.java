import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Unit tests of Hello.respond, with a JUnit XML report (no test library needed). */
public final class HelloTest {
    private static final List<String> cases = new ArrayList<>();
    private static int failures = 0;

    private static void check(String name, boolean ok, String message) {
        if (ok) {
            cases.add("<testcase classname=\"HelloTest\" name=\"" + name + "\" time=\"0\"/>");
        } else {
            failures++;
            cases.add("<testcase classname=\"HelloTest\" name=\"" + name + "\" time=\"0\"><failure message=\""
                    + message + "\"/></testcase>");
        }
    }

    public static void main(String[] args) throws IOException {
        check("health", Hello.respond("/healthz")[0].equals("200"), "health is not 200");
        check("version", Hello.respond("/version")[1].contains(Hello.VERSION), "version missing");
        check("unknown_path", Hello.respond("/nope")[0].equals("404"), "unknown path is not 404");
        Path report = Path.of(args.length > 0 ? args[0] : "reports/junit.xml");
        Files.createDirectories(report.getParent());
        String xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"HelloTest\" tests=\""
                + cases.size() + "\" failures=\"" + failures + "\">\n" + String.join("\n", cases) + "\n</testsuite>\n";
        Files.writeString(report, xml, StandardCharsets.UTF_8);
        System.out.println(cases.size() + " tests, " + failures + " failures");
        System.exit(failures == 0 ? 0 : 1);
    }
}
